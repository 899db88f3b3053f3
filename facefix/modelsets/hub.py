"""A model set's files: which to pull from the Hugging Face hub, where they are on disk, and pulling them.

``locate`` finds a model set's folders (hub cache or local directories) without
the network; ``pull`` downloads only the files the engine loads; errors from the
hub become one line naming the id, the cause and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from facefix.common.atomic import atomic_output
from facefix.common.files import file_sha256
from facefix.common.paths import (
    cache_dir,
    hf_cache,
    offline,
    offline_variables,
)
from facefix.errors import ModelError, UsageError
from facefix.modelsets.registry import SINGLE_FILE_SUFFIXES, ModelSet, is_local
from facefix.modelsets.single_file import file_revision, is_single_file, sample_into

log = logging.getLogger(__name__)


#: The base's weighted parts: (folder, weight file stem).
BASE_PARTS = (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"))

#: A guide's safetensors weights, in the order ``pull`` prefers them.
GUIDE_SAFETENSORS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
#: Only when a guide ships no safetensors (the tile ControlNet): a pickle,
#: which diffusers loads with ``torch.load(weights_only=True)``.
GUIDE_PICKLE = "diffusion_pytorch_model.bin"


def pull_patterns(role: str, variant: str | None, files) -> list[str]:
    """The files ``pull`` downloads of a repository whose files are ``files``.

    ``locate`` asks the cache for exactly these, computed from the files of
    the local snapshot: huggingface_hub (2.4 here) checks a snapshot against
    the repository's cached file list and raises ``IncompleteSnapshotError``
    for a file that exists on the hub but was never downloaded, so asking for
    a format ``pull`` skipped (the ``.bin`` next to a ``.safetensors``) would
    make a complete download look missing.

    Base: for each part, the ``variant`` safetensors when present, else the
    plain one, else (text encoder) transformers' ``pytorch_model.bin``. Guide:
    one weights format, the first of ``.safetensors``, ``.fp16.safetensors``,
    the pickle (never two copies of the same weights). A format saved in shards
    is its ``.index[.variant].json`` plus a ``*-of-*`` pattern for the shards.
    """
    files = set(files)
    if role == "base":
        patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*"]
        for sub, stem in BASE_PARTS:
            patterns.append(f"{sub}/config.json")
            choices = [weight_names(stem, variant), weight_names(stem, None)] if variant else [weight_names(stem, None)]
            if sub == "text_encoder":  # transformers' pickle name, for repositories that ship nothing else
                choices.append(["pytorch_model.bin"])
            # None present: ask for the first, so that locate names it as missing.
            chosen = next((c for c in choices if any(f"{sub}/{n}" in files for n in c)), choices[0])
            patterns += _present_or_first(sub, chosen, files)
        return patterns
    for choice in ([*weight_names("diffusion_pytorch_model", None)], weight_names("diffusion_pytorch_model", "fp16"),
                   [GUIDE_PICKLE]):
        present = _present_or_first("", choice, files)
        if any(p in files for p in present):
            return ["config.json", *present]
    return ["config.json", GUIDE_SAFETENSORS[0]]


def weight_names(stem: str, variant: str | None) -> list[str]:
    """One weights format's file names: the single file, else a sharded set (index + ``*-of-*`` shards)."""
    if variant:
        return [f"{stem}.{variant}.safetensors", f"{stem}.safetensors.index.{variant}.json"]
    return [f"{stem}.safetensors", f"{stem}.safetensors.index.json"]


def _present_or_first(sub: str, names: list[str], files: set[str]) -> list[str]:
    """The patterns for the first of ``names`` in ``files`` (a shard index brings its shards)."""
    prefix = f"{sub}/" if sub else ""
    for name in names:
        if prefix + name in files:
            if name.endswith(".json"):  # diffusers: stem[.variant]-00001-of-00002.safetensors
                stem, _, rest = name.partition(".safetensors.index")
                variant = rest.removesuffix(".json").strip(".")
                return [prefix + name, f"{prefix}{stem}-*-of-*.safetensors" if not variant
                        else f"{prefix}{stem}.{variant}-*-of-*.safetensors"]
            return [prefix + name]
    return [prefix + names[0]]


def _weight_file(folder: Path, stem: str, variant: str | None) -> Path | None:
    """The weights a loader reads in ``folder``: one file, or the index of a sharded set whose shards are all there."""
    names = weight_names(stem, variant) if variant else []
    names += [*weight_names(stem, None), *weight_names(stem, "fp16"), f"{stem}.bin", f"{stem}.bin.index.json"]
    if stem == "model":  # transformers' names of a text encoder's pickle
        names += ["pytorch_model.bin", "pytorch_model.bin.index.json"]
    for name in names:
        path = folder / name
        if path.is_file() and (not name.endswith(".json") or not _missing_shards(path)):
            return path
    return None


def _missing_shards(index: Path) -> list[str]:
    """Shards a sharded set's index names that are not beside it (all of them when the index is unreadable)."""
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        return [f"{index.name} ({exc})"]
    return sorted(s for s in shards if not (index.parent / s).is_file())


def missing_base_files(base_dir: Path, variant: str | None) -> list[str]:
    """Files a base model folder lacks (empty when complete)."""
    if is_single_file(base_dir):
        return []
    missing = [] if (base_dir / "scheduler/scheduler_config.json").is_file() else ["scheduler/scheduler_config.json"]
    tokenizer = base_dir / "tokenizer"
    if not ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "vocab.json").is_file()):
        missing.append("tokenizer/vocab.json (or tokenizer.json)")
    for sub, stem in BASE_PARTS:
        if not (base_dir / sub / "config.json").is_file():
            missing.append(f"{sub}/config.json")
        if _weight_file(base_dir / sub, stem, variant) is None:
            missing.append(_missing_weights(base_dir / sub, stem, variant))
    return missing


def _missing_weights(folder: Path, stem: str, variant: str | None) -> str:
    for index in sorted(folder.glob("*.index*.json")):
        if _missing_shards(index):
            return f"{folder.name}/ shards of {index.name}: {', '.join(_missing_shards(index)[:3])}"
    name = f"{stem}[.{variant}].safetensors" if variant else f"{stem}.safetensors"
    return f"{folder.name}/{name}"


def missing_guide_files(guide_dir: Path) -> list[str]:
    if is_single_file(guide_dir):
        return []
    missing = [] if (guide_dir / "config.json").is_file() else ["config.json"]
    if _weight_file(guide_dir, "diffusion_pytorch_model", None) is None:
        missing.append(_missing_weights(guide_dir, "diffusion_pytorch_model", None).removeprefix(guide_dir.name + "/"))
    return missing


def weight_path(folder: Path, stem: str = "diffusion_pytorch_model", variant: str | None = None) -> Path | None:
    """The weights file a loader would use in ``folder`` (public for the loader)."""
    return _weight_file(Path(folder), stem, variant)


# --------------------------------------------------------------------------- locate / pull

@dataclass(frozen=True)
class ModelPaths:
    """Where a model set's two halves are on disk, and which revision they are.

    Args:
        model_set: the set these paths belong to.
        base_dir: folder of the diffusers-format base model, or its single-file checkpoint.
        guide_dir: folder of the ControlNet, or its single file.
        base_revision: commit hash (hub) or ``local-<content hash>``.
        guide_revision: commit hash (hub) or ``local-<content hash>``.
        base_size_revision, guide_size_revision: a local folder's :func:`size_revision`, the
            fingerprint older facefix recorded, to recognise artifacts made with it; None otherwise.
    """

    model_set: ModelSet
    base_dir: Path
    guide_dir: Path
    base_revision: str
    guide_revision: str
    base_size_revision: str | None = None
    guide_size_revision: str | None = None

    def provenance(self) -> dict[str, str]:
        """What an artifact records to be refused by another model set."""
        found = {
            "model_set": self.model_set.name,
            "model_set_key": self.model_set.key,
            "base": self.model_set.base,
            "base_revision": self.base_revision,
            "guide": self.model_set.guide,
            "guide_revision": self.guide_revision,
            "condition": self.model_set.condition,
        }
        for key, sizes in (("base", self.base_size_revision), ("guide", self.guide_size_revision)):
            if sizes is not None:  # a local folder only: hub and single-file provenance is as it was
                found[f"{key}_size_revision"] = sizes
        return found


def folder_revision(folder: Path) -> str:
    """A content fingerprint of a local model folder, read in about a second whatever its size.

    Every file by its path in the folder: a ``.json`` (configs, shard indexes,
    the tokenizer's) by its whole content, any other (weights, ``merges.txt``)
    by its size and sampled chunks (:func:`~facefix.modelsets.single_file.sample_into`,
    as a single file's revision), so two same-size fine-tunes differ.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
        else:
            sample_into(digest, path)
    return "local-" + digest.hexdigest()[:16]


def size_revision(folder: Path) -> str:
    """The fingerprint facefix recorded for a local model folder before :func:`folder_revision`: its
    JSON files' content and the other files' sizes only, which same-size fine-tunes share.

    Kept only to recognise artifacts made with it (:func:`sizes_only_note`); it never vouches for a folder.
    """
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            digest.update(rel.encode())
            digest.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return "local-" + digest.hexdigest()[:16]


def sizes_only_note(key: str, settings: dict, provenance: dict) -> str | None:
    """Why an artifact's ``key`` (``base``/``guide``) revision differs, when it is the sizes-only
    fingerprint older facefix recorded (:func:`size_revision`) and this folder's sizes still match it.

    Args:
        key: ``base`` or ``guide``.
        settings: the artifact's settings (its ``<key>_revision`` is what it was made with).
        provenance: the loaded set's (:meth:`ModelPaths.provenance`).

    Returns:
        One sentence naming both fingerprints, or None when that is not what happened.
    """
    made, have = settings.get(f"{key}_revision"), provenance.get(f"{key}_revision")
    sizes = provenance.get(f"{key}_size_revision")
    if made is None or made == have or made != sizes:
        return None
    return (f"it was made when facefix fingerprinted a local {key} folder by its files' sizes only ({made}); "
            f"{provenance.get(key)} has those sizes, but same-size fine-tunes share them, so facefix now "
            f"fingerprints sampled content ({have}) and cannot tell whether these are the weights it was made with")


def _missing_error(model_set: ModelSet, role: str, ref: str, where: str, detail: str = "") -> ModelError:
    return ModelError(
        f"model set {model_set.name!r}: {role} model {ref!r} is not available ({detail or 'not downloaded'}); "
        f"looked in {where}. Fetch it with `{model_set.pull_command}`"
        + (f" (needs network: unset {'/'.join(offline_variables())})" if offline() else "")
        + ", or point FACEFIX_MODEL_SET at a local model-set directory."
    )


def _repo_folder(ref: str) -> Path:
    """The hub cache folder of a model repository (``models--org--name``)."""
    return hf_cache() / ("models--" + ref.replace("/", "--"))


def _cached_snapshot(ref: str, revision: str) -> Path | None:
    """The local snapshot folder of ``ref@revision``, as the hub cache lays it out, or None."""
    storage = _repo_folder(ref)
    commit = revision
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        ref_file = storage / "refs" / revision
        if not ref_file.is_file():
            return None
        commit = ref_file.read_text().strip()
    folder = storage / "snapshots" / commit
    return folder if folder.is_dir() else None


def locate_one(model_set: ModelSet, role: str) -> tuple[Path, str]:
    ref = model_set.base if role == "base" else model_set.guide
    revision = model_set.base_revision if role == "base" else model_set.guide_revision
    if is_local(ref):
        folder = Path(ref).expanduser().resolve()
        if folder.is_file() and not is_single_file(folder):
            raise _missing_error(model_set, role, ref, str(folder),
                                 f"a file, but not a checkpoint ({', '.join(SINGLE_FILE_SUFFIXES)})")
        if not folder.exists():
            raise _missing_error(model_set, role, ref, str(folder), "no such directory or file")
        found_revision = file_revision(folder) if folder.is_file() else folder_revision(folder)
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            IncompleteSnapshotError,
            LocalEntryNotFoundError,
        )

        where = f"the Hugging Face cache {hf_cache()}"
        snapshot = _cached_snapshot(ref, revision)
        if snapshot is None:
            raise _missing_error(model_set, role, ref, where)
        # Ask only for what pull downloads, judged from what the snapshot holds
        # (see pull_patterns): the hub client checks these against its cached
        # file list, which catches a download that was cut short.
        present = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        patterns = pull_patterns(role, model_set.variant, present)
        try:
            folder = Path(
                snapshot_download(
                    ref, revision=revision, allow_patterns=patterns, local_files_only=True, cache_dir=hf_cache()
                )
            )
        except IncompleteSnapshotError as exc:
            raise _missing_error(model_set, role, ref, where, "download incomplete") from exc
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
            raise _missing_error(model_set, role, ref, where) from exc
        found_revision = folder.name
    missing = missing_base_files(folder, model_set.variant) if role == "base" else missing_guide_files(folder)
    if missing:
        raise _missing_error(model_set, role, ref, str(folder), "incomplete: missing " + ", ".join(missing))
    return folder, found_revision


def locate(model_set: ModelSet) -> ModelPaths:
    """Find a model set on disk without touching the network.

    Raises:
        ModelError: a part is missing; the message names the id, where it
            looked and the ``facefix models pull`` command that fetches it.
    """
    base_dir, base_rev = locate_one(model_set, "base")
    guide_dir, guide_rev = locate_one(model_set, "guide")
    sizes = [size_revision(d) if is_local(ref) and d.is_dir() else None
             for ref, d in ((model_set.base, base_dir), (model_set.guide, guide_dir))]
    converted = _converted_guide_dir(model_set.guide, guide_rev)
    if (converted / "diffusion_pytorch_model.safetensors").is_file():
        guide_dir = converted
    return ModelPaths(model_set, base_dir, guide_dir, base_rev, guide_rev, *sizes)


def is_available(model_set: ModelSet) -> bool:
    """True when :func:`locate` would succeed (for ``--engine auto``).

    A cache this user cannot read counts as not there, and says so in the log.
    """
    try:
        locate(model_set)
    except ModelError:
        return False
    except OSError as exc:
        log.warning("the weights of model set %r cannot be read (%s); the diffusion engine is not used",
                    model_set.name, exc)
        return False
    return True


def hub_error(exc: BaseException, ref: str, revision: str, *, what: str, fix: str) -> ModelError:
    """One line for a hub failure, naming the repository, the cause and the fix.

    A gated or private repository is not "withdrawn": huggingface_hub answers
    a gated repo with ``GatedRepoError`` and an unauthenticated private one
    with ``RepositoryNotFoundError`` (HTTP 401), and each needs another fix.

    Args:
        exc: what the hub client raised.
        ref, revision: the repository asked for.
        what: what was being done (``download base model``).
        fix: the command to run again once the cause is fixed.
    """
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # huggingface_hub < 1.0 allows an error without a response; >= 1.0 always has one.
    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    page = f"https://huggingface.co/{ref}"
    login = "log in with `hf auth login` or pass --token"
    if isinstance(exc, GatedRepoError):
        cause = f"{ref} is gated: accept its terms at {page}, then {login}, and run `{fix}` again"
    elif isinstance(exc, RevisionNotFoundError):
        cause = f"{ref} has no revision {revision!r}: name an existing branch, tag or commit"
    elif isinstance(exc, RepositoryNotFoundError) and status == 401:
        cause = (f"the hub did not show {ref} (HTTP 401): it is private or gated and no valid token was sent; "
                 f"{login}, and run `{fix}` again")
    elif isinstance(exc, RepositoryNotFoundError):
        cause = (f"{ref} does not exist on the hub (withdrawn or misspelt): name a mirror with "
                 "`facefix models pull --base ID --guide ID` or FACEFIX_MODEL_SET")
    elif isinstance(exc, DisabledRepoError):
        cause = f"{ref} was disabled by its owner: name a mirror with `facefix models pull --base ID --guide ID`"
    elif status in (401, 403):
        cause = f"the hub refused {ref} (HTTP {status}): {login} with a token that can read it, and run `{fix}` again"
    elif isinstance(exc, OfflineModeIsEnabled):
        cause = f"offline mode is on ({'/'.join(offline_variables()) or 'HF_HUB_OFFLINE'}): unset it and run `{fix}` again"
    elif isinstance(exc, HfHubHTTPError):
        cause = f"the hub answered HTTP {status} for {ref}: try `{fix}` again later"
    else:  # connection refused, DNS, timeout, a full disk: the client's own words say which
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = f"{type(exc).__name__}: {first_line}; check the network and disk, and run `{fix}` again"
    return ModelError(f"could not {what} {ref}@{revision}: {cause}")


def hub_error_types() -> tuple[type[BaseException], ...]:
    """What a hub call raises for reasons outside facefix: network, auth, the hub, the disk.

    ``HTTPError`` is the hub client's HTTP library's base error, which
    ``huggingface_hub.errors`` imports under that name in every supported
    version (requests before 1.0, httpx/httpx2 after); it covers connection
    failures, which httpx does not make ``OSError``. ``OSError`` covers
    requests' connection errors, a full disk and ``LocalEntryNotFoundError``;
    ``ConnectionError`` covers ``OfflineModeIsEnabled``.
    """
    from huggingface_hub.errors import HTTPError

    return (HTTPError, OSError, ConnectionError)


def pull(model_set: ModelSet, *, tqdm_class=None, token: str | None = None, convert: bool = True) -> ModelPaths:
    """Download a model set into the Hugging Face cache and check it.

    Files already cached are not fetched again. Only one format of each
    weights file is fetched (:func:`pull_patterns`). A guide that ships only a
    pickle (``.bin``) is converted once to fp16 safetensors under
    ``cache_dir()/models`` so that later loads never unpickle.

    Args:
        model_set: the set to fetch; local halves are only checked.
        tqdm_class: progress-bar class handed to ``snapshot_download``.
        token: hub token for gated repositories (default: the logged-in one).
        convert: convert a pickle-only guide to safetensors.

    Returns:
        Where the set now is.

    Raises:
        ModelError: offline, or the hub failed (one line: cause and fix, see :func:`hub_error`).
    """
    from huggingface_hub import HfApi, snapshot_download

    if offline():
        remote = [r for r in (model_set.base, model_set.guide) if not is_local(r)]
        if remote:
            raise ModelError(
                f"cannot pull {', '.join(remote)}: offline mode is on ({'/'.join(offline_variables())}); "
                f"unset it and run `{model_set.pull_command}` again, or copy the weights into {hf_cache()}"
            )
    api = HfApi(token=token)
    for role in ("base", "guide"):
        ref = model_set.base if role == "base" else model_set.guide
        if is_local(ref):
            continue
        revision = model_set.base_revision if role == "base" else model_set.guide_revision
        log.info("pulling %s model %s@%s", role, ref, revision)
        try:
            patterns = pull_patterns(role, model_set.variant, api.list_repo_files(ref, revision=revision))
            folder = Path(snapshot_download(
                ref, revision=revision, allow_patterns=patterns, cache_dir=hf_cache(), tqdm_class=tqdm_class, token=token
            ))
            hashes = hub_hashes(api, ref, folder.name)
        except hub_error_types() as exc:
            raise hub_error(exc, ref, revision, what=f"download {role} model", fix=model_set.pull_command) from exc
        write_manifest(ref, folder, hashes)
    paths = locate(model_set)
    if convert and not (paths.guide_dir / "diffusion_pytorch_model.safetensors").is_file():
        convert_guide(paths)
        paths = locate(model_set)
    return paths


def _converted_guide_dir(guide: str, revision: str) -> Path:
    return cache_dir() / "models" / "converted" / re.sub(r"[^A-Za-z0-9._-]+", "--", guide) / revision


def convert_guide(paths: ModelPaths, dtype: str = "float16") -> Path:
    """Convert a pickle-only guide to safetensors once; return the new folder.

    The pickle is read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors.
    """
    import shutil

    import torch
    from safetensors.torch import save_file

    source = weight_path(paths.guide_dir)
    if source is None or source.suffix != ".bin":
        return paths.guide_dir
    target = _converted_guide_dir(paths.model_set.guide, paths.guide_revision)
    target.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to safetensors in %s", source, target)
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = {k: v.to(getattr(torch, dtype)).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    shutil.copyfile(paths.guide_dir / "config.json", target / "config.json")
    with atomic_output(target / "diffusion_pytorch_model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "source": str(source.name)})
    write_manifest(f"converted:{paths.model_set.guide}", target, {})
    return target


# --------------------------------------------------------------------------- verify


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file, which the hub reports for non-LFS files."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def manifest_path(ref: str, revision: str) -> Path:
    return cache_dir() / "models" / "manifests" / f"{re.sub(r'[^A-Za-z0-9._-]+', '--', ref)}@{revision}.json"


def hub_hashes(api, ref: str, revision: str) -> dict[str, dict]:
    """{file: {"sha256"| "git_sha1": ..., "size": ...}} from the hub's metadata."""
    info = api.model_info(ref, revision=revision, files_metadata=True)
    out = {}
    for sibling in info.siblings or []:
        if sibling.lfs is not None:
            out[sibling.rfilename] = {"sha256": sibling.lfs.sha256, "size": sibling.lfs.size}
        elif sibling.blob_id:
            out[sibling.rfilename] = {"git_sha1": sibling.blob_id, "size": sibling.size}
    return out


def write_manifest(ref: str, folder: Path, hub: dict[str, dict], revision: str | None = None) -> Path:
    """Record the hashes of the files in ``folder`` (hub's where known) for offline checks."""
    revision = revision or folder.name
    files = {}
    for path in [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.name if path == folder else path.relative_to(folder).as_posix()
        files[rel] = hub.get(rel) or {"sha256": file_sha256(path), "size": path.stat().st_size}
    target = manifest_path(ref, revision)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"ref": ref, "revision": revision, "files": files}, indent=2))
    return target


def record_manifest(folder: Path) -> Path:
    """Record the hashes of a local model folder (or single-file checkpoint), so that ``verify`` can check it later."""
    folder = Path(folder).resolve()
    return write_manifest(str(folder), folder, {}, revision="local")


def listed_model_sets() -> list[dict]:
    """The registered model sets, the ones this user added, and ``FACEFIX_MODEL_SET``'s when it is none
    of them, each with whether its weights are on disk (``facefix models list``)."""
    from facefix.modelsets.registry import REGISTRY, resolve_model_set, user_model_sets

    sets = [*REGISTRY.values(), *user_model_sets().values()]
    try:
        chosen = resolve_model_set(None)
        if chosen.name not in {s.name for s in sets}:
            sets.append(chosen)
    except (UsageError, ModelError):  # a bad FACEFIX_MODEL_SET must not hide the list
        chosen = None
    return [
        {
            "name": s.name,
            "default": chosen is not None and s.name == chosen.name,
            "base": s.base,
            "guide": s.guide,
            "condition": s.condition,
            "download_mb": s.download_mb,
            "license": s.license,
            "available": is_available(s),
            "description": s.description,
        }
        for s in sets
    ]
