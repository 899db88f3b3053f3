"""Expand the paths a user gives into (input, output) pairs, safely."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .enroll import scan_photos
from .errors import UsageError
from .photos import is_photo_path
from .pipeline import output_path


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def plan_jobs(
    paths: list[Path],
    *,
    output_dir: Path | None,
    suffix: str,
    ext: str,
    recursive: bool,
) -> list[Job]:
    """One job per input photo; folders are expanded and mirrored under ``output_dir``.

    Outputs of an earlier run (inside ``output_dir``, or carrying ``suffix``
    beside their source) are never picked up as inputs.
    """
    jobs: list[Job] = []
    out_root = output_dir.resolve() if output_dir is not None else None
    for path in paths:
        if path.is_dir():
            found = scan_photos(path) if recursive else sorted(
                p for p in path.iterdir() if p.is_file() and is_photo_path(p) and not p.name.startswith("."))
            for src in found:
                if out_root is not None and out_root in src.resolve().parents:
                    continue
                if out_root is None and suffix and src.stem.endswith(suffix):
                    continue
                folder = output_dir / src.parent.relative_to(path) if output_dir is not None else None
                jobs.append(Job(src, output_path(src, output_dir=folder, suffix=suffix, ext=ext)))
        elif path.exists() or path.is_symlink():
            jobs.append(Job(path, output_path(path, output_dir=output_dir, suffix=suffix, ext=ext)))
        else:
            raise UsageError(f"{path} does not exist; check the path")
    targets: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key in targets:
            raise UsageError(
                f"{job.source} and {targets[key]} would both be written to {job.target}; "
                "use --ext same or separate --output folders"
            )
        targets[key] = job.source
    return jobs
