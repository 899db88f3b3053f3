"""A profile described as plain data: what ``facefix profiles list/show`` print, and ``--json`` gives."""

from __future__ import annotations

from typing import Any

from facefix.profiles.records import Profile


def profile_summary(profile: Profile) -> dict[str, Any]:
    """A JSON-able summary of a profile (``facefix profiles list``)."""
    return {
        "name": profile.name,
        "references": len(profile.references),
        "artifacts": sorted(profile.artifacts),
        "backends": profile.backends,
        "created": profile.created.isoformat(),
        "updated": profile.updated.isoformat(),
        "path": str(profile.path),
    }


def profile_details(profile: Profile) -> dict[str, Any]:
    """Everything about a profile, JSON-able: references, artifacts with their sizes and settings (``facefix profiles show``)."""
    data = profile_summary(profile)
    data["references"] = [
        {
            "id": r.id,
            "source": r.source,
            "sha256": r.sha256,
            "crop": r.crop,
            "box": list(r.box),
            "added": r.added.isoformat(),
            "embeddings": {b: int(v.size) for b, v in r.embeddings.items()},
            "info": r.info,
        }
        for r in profile.references
    ]
    data["artifacts"] = {}
    for kind, a in sorted(profile.artifacts.items()):
        file = profile.path / a.file
        data["artifacts"][kind] = {
            "file": a.file,
            "bytes": file.stat().st_size if file.is_file() else None,
            "created": a.created.isoformat(),
            "settings": a.settings,
        }
    return data
