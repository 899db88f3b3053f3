"""Checking a model set's files against the hub's own hashes (or the manifest recorded when they were pulled)."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from facefix.common.files import file_sha256
from facefix.common.paths import (
    model_set_override,
    offline,
)
from facefix.errors import ModelError, UsageError
from facefix.modelsets.hub import (
    git_blob_sha1,
    hub_error,
    hub_error_types,
    hub_hashes,
    locate,
    locate_one,
    manifest_path,
)
from facefix.modelsets.registry import (
    DEFAULT_MODEL_SET,
    REGISTRY,
    ModelSet,
    is_local,
    resolve_model_set,
    user_model_sets,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileCheck:
    """One file's check: ``ok`` is False on a hash or size mismatch or a missing file."""

    path: str
    ok: bool
    expected: str = ""
    actual: str = ""
    source: str = ""  # hub, manifest, cache-blob, exists


@dataclass(frozen=True)
class VerifyReport:
    model_set: str
    checks: tuple[FileCheck, ...] = field(default_factory=tuple)
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)


def _check_file(path: Path, rel: str, expected: dict, source: str) -> FileCheck:
    if not path.is_file():
        return FileCheck(rel, False, "present", "missing", source)
    if "size" in expected and expected["size"] is not None and path.stat().st_size != expected["size"]:
        return FileCheck(rel, False, f"{expected['size']} bytes", f"{path.stat().st_size} bytes", source)
    if "sha256" in expected:
        actual = file_sha256(path)
        return FileCheck(rel, actual == expected["sha256"], expected["sha256"], actual, source)
    actual = git_blob_sha1(path)
    return FileCheck(rel, actual == expected["git_sha1"], expected["git_sha1"], actual, source)


def _verify_folder(ref: str, folder: Path, revision: str, online: bool, token: str | None) -> list[FileCheck]:
    """Check each file of ``folder`` (or ``folder`` itself, a single-file checkpoint)."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    expected: dict[str, dict] = {}
    source = "manifest"
    if online and not is_local(ref) and not ref.startswith("converted:"):
        from huggingface_hub import HfApi

        try:
            expected, source = hub_hashes(HfApi(token=token), ref, revision), "hub"
        except hub_error_types() as exc:
            raise hub_error(
                exc, ref, revision, what="read the hashes of",
                fix="facefix models verify --token TOKEN (or --offline, against the hashes recorded at pull)",
            ) from exc
    else:
        local = is_local(ref)
        manifest = manifest_path(str(folder) if local else ref, "local" if local else revision)
        if manifest.is_file():
            expected = json.loads(manifest.read_text())["files"]
    checks = []
    for path in files:
        rel = path.name if path == folder else path.relative_to(folder).as_posix()
        if rel in expected:
            checks.append(_check_file(path, rel, expected[rel], source))
            continue
        # Offline without a manifest: the HF cache names each blob by its
        # hash (sha256 for LFS files, the git object id otherwise).
        blob = Path(os.path.realpath(path)).name if path.is_symlink() else ""
        if re.fullmatch(r"[0-9a-f]{64}", blob):
            checks.append(_check_file(path, rel, {"sha256": blob}, "cache-blob"))
        elif re.fullmatch(r"[0-9a-f]{40}", blob):
            checks.append(_check_file(path, rel, {"git_sha1": blob}, "cache-blob"))
        else:
            checks.append(FileCheck(rel, path.is_file(), "present", "present" if path.is_file() else "missing", "exists"))
    return checks


def verify(model_set: ModelSet, *, online: bool | None = None, token: str | None = None) -> VerifyReport:
    """Check that a model set's files are complete and match their hashes.

    Online, hashes come from the hub's LFS metadata for the cached revision.
    Offline, from the manifest recorded at pull time, else from the names of
    the Hugging Face cache's blobs (which are the hub's hashes).

    Args:
        model_set: the set to check.
        online: ask the hub; default: unless offline mode is on.
        token: hub token for gated repositories.

    Raises:
        ModelError: online, the hub could not be asked (one line, see :func:`hub_error`).
    """
    online = (not offline()) if online is None else online
    try:
        paths = locate(model_set)
    except ModelError as exc:
        return VerifyReport(model_set.name, (), (str(exc),))
    checks: list[FileCheck] = []
    for role, ref, folder, revision in (
        ("base", model_set.base, paths.base_dir, paths.base_revision),
        ("guide", model_set.guide, paths.guide_dir, paths.guide_revision),
    ):
        converted = folder != locate_one(model_set, role)[0]
        label = f"converted:{ref}" if converted else ref
        for check in _verify_folder(label, folder, revision, online and not converted, token):
            checks.append(replace(check, path=f"{role}/{check.path}"))
    return VerifyReport(model_set.name, tuple(checks))


def describe_model_sets() -> list[dict]:
    """Each registered model set, each one the user added, and the one ``FACEFIX_MODEL_SET`` names: on disk? verified? (no network).

    ``verified`` checks every file against the hashes recorded at pull (or
    the cache's blob names), so it reads the weights once: seconds per GB.
    A ``FACEFIX_MODEL_SET`` that names nothing usable is reported as a row
    with its error, not skipped.
    """
    sets: list[ModelSet] = [*REGISTRY.values(), *user_model_sets().values()]
    rows: list[dict] = []
    chosen_name = None
    if model_set_override():
        try:
            chosen = resolve_model_set(None)
        except (UsageError, ModelError) as exc:
            rows.append({"name": model_set_override(), "default": True, "on_disk": False,
                         "verified": False, "detail": str(exc)})
        else:
            chosen_name = chosen.name
            if chosen.name not in {s.name for s in sets}:
                sets.append(chosen)
    else:
        chosen_name = DEFAULT_MODEL_SET
    for model_set in sets:
        row = {"name": model_set.name, "default": model_set.name == chosen_name, "base": model_set.base,
               "guide": model_set.guide}
        try:
            paths = locate(model_set)
        except ModelError as exc:
            rows.append({**row, "on_disk": False, "verified": False, "detail": str(exc)})
            continue
        report = verify(model_set, online=False)
        bad = [c.path for c in report.checks if not c.ok]
        detail = (f"{paths.base_dir} + {paths.guide_dir}" if report.ok else
                  f"{len(bad)} file(s) do not match their hashes ({', '.join(bad[:3])}): run `{model_set.pull_command}`")
        rows.append({**row, "on_disk": True, "verified": report.ok, "detail": detail,
                     "base_dir": str(paths.base_dir), "guide_dir": str(paths.guide_dir)})
    return rows
