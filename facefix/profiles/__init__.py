"""The on-disk profile store: one directory per enrolled person, one manifest each.

Modules: ``names`` (validation), ``records`` (manifest records), ``storage``
(atomic files, locks, one manifest directory), ``editor`` (changing one
profile), ``stores`` (:class:`ProfileStore`, :class:`GenericStore`).

Layout of ``paths.data_dir()/"profiles"/<name>/``::

    manifest.json                       schema-versioned; the only file that is ever overwritten
    embeddings-<hash>.safetensors       every reference's embeddings, keyed "<ref id>/<backend>"
    crops/<hash>.png                    aligned 512x512 RGB references, lossless
    artifacts/<kind>-<hash>.safetensors trained weights; the manifest records how they were made
    work/<kind>/                        training scratch for resume; never in the manifest

Why it is crash safe: every file except ``manifest.json`` is content-addressed
(its name holds a hash of its bytes) and is written before the manifest, and
the manifest is replaced atomically (temp file + fsync + ``os.replace``) last.
A crash at any point therefore leaves the previous manifest, and everything it
names, intact. Files that no manifest names are garbage-collected on the next
successful commit. Writers of one profile are serialised with a lock file
(``fcntl.flock``; no locking where that is unavailable).

The generic model is not a person: :class:`GenericStore` keeps its artifacts
under ``paths.data_dir()/"generic"/`` with the same mechanism.
"""

from facefix.profiles.editor import ProfileEditor
from facefix.profiles.names import (
    MANIFEST,
    MAX_NAME_LENGTH,
    SCHEMA_VERSION,
    validate_name,
)
from facefix.profiles.records import Artifact, Profile, Reference
from facefix.profiles.stores import GenericStore, ProfileStore

__all__ = [
    "SCHEMA_VERSION",
    "MAX_NAME_LENGTH",
    "MANIFEST",
    "validate_name",
    "Reference",
    "Artifact",
    "Profile",
    "ProfileEditor",
    "ProfileStore",
    "GenericStore",
]
