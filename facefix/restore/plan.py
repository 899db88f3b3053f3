"""Expand the paths a user gives into (input, output) pairs, safely.

Folders are scanned (recursively with ``-r``; symlinked folders are never
followed, so a symlink loop cannot trap the scan), filtered by ``--include`` /
``--exclude`` globs, and mirrored under ``--output``. Extensions match in any
case (``.JPG``, ``.Jpeg``, ``.TIF``). Nothing a run writes is ever taken as an
input: not the output folder when it sits inside an input folder, not files
carrying the output suffix beside their sources, not a file an earlier run
recorded as its output, not a subfolder holding another run's record (an
earlier ``--output`` folder), and no temp or hidden file.

Two sources that share a stem (``photo.png`` and ``photo.gif``: GIF is written
as PNG) would get the same output. Each source whose extension is not the
output's keeps its whole name in the output's (``photo.gif_restored.png``);
the one whose extension is the output's keeps the plain name
(``photo_restored.png``). The rule looks only at the colliding names, so a
rerun plans the same targets (the resume record is keyed by them), and the
plain name does not move when a same-stem file is added later.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facefix.errors import UsageError
from facefix.photos import SUPPORTED_SUFFIXES
from facefix.restore.pipeline import output_path
from facefix.restore.record import STATE_NAME

#: What a folder scan picks up: every format facefix writes, plus GIF (read:
#: first frame; written as PNG, as facefix does not write GIF).
INPUT_SUFFIXES = frozenset(SUPPORTED_SUFFIXES | {".gif"})
_READ_ONLY_SUFFIXES = {".gif"}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def is_input_name(name: str) -> bool:
    """A photo file name a folder scan picks up (suffix in any case, not hidden)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in INPUT_SUFFIXES


#: Image formats found in photo folders that facefix does not read (camera raw, JPEG 2000, ...).
OTHER_IMAGE_SUFFIXES = frozenset({
    ".jp2", ".j2k", ".jpx", ".jxl", ".tga", ".psd", ".ico", ".pcx", ".ppm", ".pgm",
    ".pbm", ".svg", ".eps", ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf",
    ".rw2", ".raf", ".pef", ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw",
})


@dataclass(frozen=True)
class NotRead:
    """A file in a scanned folder that is not a photo facefix reads, and why (reported, never an error)."""

    path: Path
    why: str


def not_read_reason(name: str) -> str:
    """Why a folder file that is not an input is left alone, naming the fix where there is one."""
    ext = os.path.splitext(name)[1].lower()
    if ext in OTHER_IMAGE_SUFFIXES:
        return f"{ext} images are not read by facefix; convert it to TIFF, PNG or JPEG to restore it"
    return "not a photo (" + (f"{ext} file" if ext else "no extension") + ")"


@dataclass
class Plan:
    """What a run will do: the (source, target) jobs, and the folder files it leaves alone."""

    jobs: list[Job]
    not_read: list[NotRead]


def _matches(rel: PurePosixPath, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match against the relative path, the name, or any parent folder."""
    candidates = [rel.as_posix().lower(), rel.name.lower()]
    candidates += [p.as_posix().lower() for p in rel.parents if p.as_posix() != "."]
    candidates += [part.lower() for part in rel.parts[:-1]]
    return any(fnmatch.fnmatchcase(c, pat.lower()) for c in candidates for pat in patterns)


def _scan(folder: Path, recursive: bool, skip_dirs: set[Path]) -> Iterable[Path]:
    """Files under ``folder`` that are not hidden, sorted; links to files are kept (they may be
    broken or loops: reading reports that), links to folders are not followed."""
    if not recursive:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if not e.name.startswith(".") and not _is_dir(e))
        yield from (folder / n for n in names)
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _real(here / d) not in skip_dirs
                         and not (here / d / STATE_NAME).exists())  # another run's output folder
        yield from (here / f for f in sorted(files) if not f.startswith("."))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: a (bad) file, reported when it is read
        return False


def plan_inputs(
    paths: list[Path],
    *,
    output_dir: Path | None,
    suffix: str,
    ext: str,
    recursive: bool,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    known_outputs: set[Path] | None = None,
) -> Plan:
    """One job per input photo; folders are expanded and mirrored under ``output_dir``.

    Files of a scanned folder that are not photos facefix reads are listed in
    ``Plan.not_read`` with the reason (a named file is always a job: reading it
    says what is wrong).

    Args:
        paths: files and folders the user named (a named file is always taken).
        output_dir: where outputs go, mirroring each folder's subfolders; None: beside each input.
        suffix: added to each output's stem.
        ext: "same", "jpg" or "png".
        recursive: descend into subfolders.
        include: keep only files matching one of these globs (relative path, name or folder).
        exclude: drop files matching one of these globs.
        known_outputs: resolved paths an earlier run wrote; never taken as inputs.

    Raises:
        UsageError: a path does not exist, or two inputs (or an input and an
            output) would share a file.
    """
    jobs: list[Job] = []
    not_read: list[NotRead] = []
    known = known_outputs or set()
    out_root = _real(output_dir) if output_dir is not None else None
    for path in paths:
        if path.is_dir():
            root = _real(path)
            # OUT strictly inside this folder: its subtree holds outputs only.
            skip_dirs = {out_root} if out_root is not None and out_root != root and root in out_root.parents else set()
            for src in _scan(path, recursive, skip_dirs):
                rel = PurePosixPath(src.relative_to(path).as_posix())
                if include and not _matches(rel, include):
                    continue
                if exclude and _matches(rel, exclude):
                    continue
                resolved = Path(os.path.abspath(src))
                if skip_dirs and out_root in resolved.parents:
                    continue
                if resolved in known or _real(src) in known:
                    continue
                if suffix and src.stem.endswith(suffix) and (out_root is None or out_root in resolved.parents):
                    continue  # an output written beside its source
                if src.stem.endswith(f"{suffix}_compare") or src.parent.name.endswith(f"{suffix}_faces"):
                    continue  # --compare / --save-faces side images
                if not is_input_name(src.name):
                    if src.name != STATE_NAME and not src.name.endswith(".part"):
                        not_read.append(NotRead(src, not_read_reason(src.name)))
                    continue
                folder = output_dir / src.parent.relative_to(path) if output_dir is not None else None
                jobs.append(Job(src, _target(src, folder, suffix, ext)))
        elif path.exists() or path.is_symlink():
            jobs.append(Job(path, _target(path, output_dir, suffix, ext)))
        else:
            raise UsageError(f"{path} does not exist; check the path")
    jobs = _separate_same_stems(jobs, suffix, ext)
    targets: dict[Path, Path] = {}
    for job in jobs:
        key = _real(job.target)
        if key in targets:
            raise UsageError(
                f"{job.source} and {targets[key]} would both be written to {job.target}; "
                "restore them into separate --output folders, or rename one of them"
            )
        targets[key] = job.source
    for job in jobs:
        other = targets.get(Path(os.path.abspath(job.source)))
        if other is not None and other != job.source:
            raise UsageError(f"the output for {other} would overwrite the input {job.source}; "
                             "give --output DIR or another --suffix")
    return Plan(jobs, not_read)


def _real(path: Path) -> Path:
    # os.path.realpath, unlike Path.resolve, does not raise on a symlink loop
    return Path(os.path.realpath(path))


def _target(src: Path, folder: Path | None, suffix: str, ext: str, keep_source_ext: bool = False) -> Path:
    if ext == "same" and src.suffix.lower() in _READ_ONLY_SUFFIXES:
        ext = "png"  # GIF is read (first frame) but not written
    return output_path(src, output_dir=folder, suffix=suffix, ext=ext, keep_source_ext=keep_source_ext)


def _separate_same_stems(jobs: list[Job], suffix: str, ext: str) -> list[Job]:
    """Give sources that would share a target distinct targets (see the module doc).

    Only a source whose extension differs from its target's is renamed; two
    sources with the target's own extension (the same name in two folders
    sent to one ``--output``) still collide, and plan_inputs refuses them.
    """
    groups: dict[Path, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(_real(job.target), []).append(i)
    result = list(jobs)
    for members in groups.values():
        if len({_real(jobs[i].source) for i in members}) < 2:
            continue  # one source (named twice): not a collision of names
        for i in members:
            job = jobs[i]
            if job.source.suffix != job.target.suffix:
                result[i] = Job(job.source, _target(job.source, job.target.parent, suffix, ext,
                                                    keep_source_ext=True))
    return result
