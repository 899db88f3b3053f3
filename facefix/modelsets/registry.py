"""Model sets: which diffusion weights the diffusion restorer uses, and where they are.

A model set is a base latent-diffusion model in diffusers format (UNet, VAE,
text encoder, tokenizer, scheduler) plus a guide: a ControlNet fed with the
pre-cleaned face. Each half is a Hugging Face hub id or a local directory.

The default, ``sd15-tile``, is Stable Diffusion 1.5 with the v1.1 tile
ControlNet, both alive on the hub in diffusers format (the paper's SD 2.1-base
was withdrawn from the hub in November 2025, and DiffBIR's face guide is not in
diffusers format; see docs/diffusion.md). A default id can disappear again, so
every id is configurable: ``FACEFIX_MODEL_SET`` names a registered set or a
local model-set directory, and the CLI takes ``--base``/``--guide``.

This module only finds, downloads and checks files. Loading them into torch
modules is :mod:`facefix.modelsets.parts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from facefix.common.files import file_sha256
from facefix.common.paths import cache_dir
from facefix.common.paths import offline as _facefix_offline
from facefix.errors import ModelError, UsageError

log = logging.getLogger(__name__)

#: Condition modes of a guide. ``image``: the guide takes the pre-cleaned face
#: itself in [0, 1] (a tile ControlNet, which has its own pixel encoder).
#: ``latent``: it takes the VAE latent of the pre-cleaned face (DiffBIR).
CONDITIONS = ("image", "latent")

#: The file naming a local model set's parts (see :func:`read_local_model_set`).
MODEL_SET_FILE = "facefix-modelset.json"


@dataclass(frozen=True)
class ModelSet:
    """A base diffusion model plus the guide that steers it.

    Args:
        name: short name shown to users and used in artifact kinds.
        base: hub id or local directory of a diffusers-format base model.
        guide: hub id or local directory of a diffusers ``ControlNetModel``.
        base_revision: hub branch, tag or commit of ``base``.
        guide_revision: hub branch, tag or commit of ``guide``.
        condition: what the guide is fed, ``image`` or ``latent`` (see :data:`CONDITIONS`).
        variant: weight variant of the base's files to fetch (``fp16`` halves the
            download; weights are upcast for training where needed).
        license: licence(s) a user accepts by pulling it.
        download_mb: approximate download size, for ``models list``.
        description: one line for ``models list``.
    """

    name: str
    base: str
    guide: str
    base_revision: str = "main"
    guide_revision: str = "main"
    condition: str = "image"
    variant: str | None = "fp16"
    license: str = ""
    download_mb: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise UsageError(f"model set {self.name!r}: condition must be one of {CONDITIONS}, got {self.condition!r}")

    @property
    def key(self) -> str:
        """Name safe for file and artifact paths (``diffusion/<key>/unet_lora``)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-") or "custom"

    @property
    def pull_command(self) -> str:
        """The command that fetches this set."""
        if self.name in REGISTRY and REGISTRY[self.name] == self:
            return f"facefix models pull {self.name}"
        return f"facefix models pull --base {self.base} --guide {self.guide}"


REGISTRY: dict[str, ModelSet] = {
    "sd15-tile": ModelSet(
        name="sd15-tile",
        base="stable-diffusion-v1-5/stable-diffusion-v1-5",
        guide="lllyasviel/control_v11f1e_sd15_tile",
        condition="image",
        variant="fp16",
        license="CreativeML OpenRAIL-M (SD 1.5); OpenRAIL (ControlNet 1.1)",
        download_mb=3600,
        description="Stable Diffusion 1.5 + ControlNet 1.1 tile (guide fed the pre-cleaned face)",
    ),
}

#: The set used when none is named. Override with ``FACEFIX_MODEL_SET``.
DEFAULT_MODEL_SET = "sd15-tile"


def is_local(ref: str) -> bool:
    """True when ``ref`` names a local directory rather than a hub id."""
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().is_dir()


def read_local_model_set(directory: Path) -> ModelSet:
    """Read a local model-set directory.

    The directory holds ``base/`` (a diffusers pipeline folder) and ``guide/``
    (a ControlNet folder), and optionally ``facefix-modelset.json`` with any
    :class:`ModelSet` fields (``base``/``guide`` relative to the directory).
    """
    directory = Path(directory).expanduser().resolve()
    fields: dict = {"name": directory.name, "base": "base", "guide": "guide", "variant": None}
    spec_file = directory / MODEL_SET_FILE
    if spec_file.is_file():
        fields.update(json.loads(spec_file.read_text()))
    for part in ("base", "guide"):
        ref = fields[part]
        candidate = directory / ref
        if candidate.is_dir():
            fields[part] = str(candidate)
        elif not (Path(ref).expanduser().is_dir() or "/" in ref):
            raise ModelError(
                f"model set directory {directory} has no {part} folder {candidate}; "
                f"it needs base/ and guide/ (or name them in {MODEL_SET_FILE})"
            )
    return ModelSet(**fields)


def write_local_model_set(directory: Path, model_set: ModelSet) -> Path:
    """Write ``facefix-modelset.json`` describing ``model_set`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(model_set)
    for part in ("base", "guide"):
        path = Path(data[part])
        if path.is_absolute() and path.is_relative_to(directory.resolve()):
            data[part] = str(path.relative_to(directory.resolve()))
    target = directory / MODEL_SET_FILE
    target.write_text(json.dumps(data, indent=2) + "\n")
    return target


def resolve_model_set(spec: str | None = None, *, base: str | None = None, guide: str | None = None) -> ModelSet:
    """Turn what the user named into a :class:`ModelSet`.

    Args:
        spec: a registered name, a local model-set directory, or ``None`` for
            ``FACEFIX_MODEL_SET`` or else :data:`DEFAULT_MODEL_SET`.
        base: replace the set's base model (hub id or local directory).
        guide: replace the set's guide (hub id or local directory).
    """
    spec = spec or os.environ.get("FACEFIX_MODEL_SET", "").strip() or DEFAULT_MODEL_SET
    if spec in REGISTRY:
        model_set = REGISTRY[spec]
    elif Path(spec).expanduser().is_dir():
        model_set = read_local_model_set(Path(spec))
    else:
        raise UsageError(
            f"unknown model set {spec!r}: use one of {', '.join(sorted(REGISTRY))} "
            "or a local model-set directory (see `facefix models list`)"
        )
    if base or guide:
        name = _custom_name(base or model_set.base, guide or model_set.guide)
        model_set = replace(
            model_set,
            name=name,
            base=base or model_set.base,
            guide=guide or model_set.guide,
            base_revision="main" if base else model_set.base_revision,
            guide_revision="main" if guide else model_set.guide_revision,
        )
    return model_set


def _custom_name(base: str, guide: str) -> str:
    digest = hashlib.sha256(f"{base}\n{guide}".encode()).hexdigest()[:8]
    return f"{Path(base).name or 'base'}+{Path(guide).name or 'guide'}-{digest}"


# --------------------------------------------------------------------------- files


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
    plain one. Guide: one weights file, the first of ``.safetensors``,
    ``.fp16.safetensors``, the pickle (never two copies of the same weights).
    """
    files = set(files)
    if role == "base":
        patterns = ["model_index.json", "scheduler/*.json", "tokenizer/*"]
        for sub, stem in BASE_PARTS:
            patterns.append(f"{sub}/config.json")
            names = ([f"{sub}/{stem}.{variant}.safetensors"] if variant else []) + [f"{sub}/{stem}.safetensors"]
            # Neither present: ask for the first, so that locate names it as missing.
            patterns.append(next((n for n in names if n in files), names[0]))
        return patterns
    weights = [*GUIDE_SAFETENSORS, GUIDE_PICKLE]
    return ["config.json", next((w for w in weights if w in files), weights[0])]


def _weight_file(folder: Path, stem: str, variant: str | None) -> Path | None:
    names = [f"{stem}.{variant}.safetensors"] if variant else []
    names += [f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def missing_base_files(base_dir: Path, variant: str | None) -> list[str]:
    """Files a base model folder lacks (empty when complete)."""
    missing = [] if (base_dir / "scheduler/scheduler_config.json").is_file() else ["scheduler/scheduler_config.json"]
    tokenizer = base_dir / "tokenizer"
    if not ((tokenizer / "tokenizer.json").is_file() or (tokenizer / "vocab.json").is_file()):
        missing.append("tokenizer/vocab.json (or tokenizer.json)")
    for sub, stem in BASE_PARTS:
        if not (base_dir / sub / "config.json").is_file():
            missing.append(f"{sub}/config.json")
        if _weight_file(base_dir / sub, stem, variant) is None:
            missing.append(f"{sub}/{stem}[.{variant}].safetensors" if variant else f"{sub}/{stem}.safetensors")
    return missing


def missing_guide_files(guide_dir: Path) -> list[str]:
    missing = [] if (guide_dir / "config.json").is_file() else ["config.json"]
    if _weight_file(guide_dir, "diffusion_pytorch_model", None) is None:
        missing.append("diffusion_pytorch_model.safetensors")
    return missing


def weight_path(folder: Path, stem: str = "diffusion_pytorch_model", variant: str | None = None) -> Path | None:
    """The weights file a loader would use in ``folder`` (public for the loader)."""
    return _weight_file(Path(folder), stem, variant)


# --------------------------------------------------------------------------- locate / pull

#: Every variable that asks for no network. ``TRANSFORMERS_OFFLINE`` is here
#: because huggingface_hub itself treats it as ``HF_HUB_OFFLINE`` (its
#: ``constants.HF_HUB_OFFLINE``): without it, ``pull`` would start and fail
#: inside the hub client with a misleading message.
OFFLINE_VARIABLES = ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when any of :data:`OFFLINE_VARIABLES` is set (1/true/yes/on)."""
    return _facefix_offline() or os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _set_offline_variables() -> str:
    return "/".join(n for n in OFFLINE_VARIABLES if os.environ.get(n, "").strip().lower() in {"1", "true", "yes", "on"})



def hf_cache() -> Path:
    """The Hugging Face hub cache, honouring ``HF_HUB_CACHE`` and ``HF_HOME`` at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class ModelPaths:
    """Where a model set's two halves are on disk, and which revision they are.

    Args:
        model_set: the set these paths belong to.
        base_dir: folder of the diffusers-format base model.
        guide_dir: folder of the ControlNet.
        base_revision: commit hash (hub) or ``local-<content hash>``.
        guide_revision: commit hash (hub) or ``local-<content hash>``.
    """

    model_set: ModelSet
    base_dir: Path
    guide_dir: Path
    base_revision: str
    guide_revision: str

    def provenance(self) -> dict[str, str]:
        """What an artifact records to be refused by another model set."""
        return {
            "model_set": self.model_set.name,
            "model_set_key": self.model_set.key,
            "base": self.model_set.base,
            "base_revision": self.base_revision,
            "guide": self.model_set.guide,
            "guide_revision": self.guide_revision,
            "condition": self.model_set.condition,
        }


def _local_revision(folder: Path) -> str:
    """A content fingerprint of a local model folder: its configs and weight sizes."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            digest.update(rel.encode())
            digest.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return "local-" + digest.hexdigest()[:16]


def _missing_error(model_set: ModelSet, role: str, ref: str, where: str, detail: str = "") -> ModelError:
    return ModelError(
        f"model set {model_set.name!r}: {role} model {ref!r} is not available ({detail or 'not downloaded'}); "
        f"looked in {where}. Fetch it with `{model_set.pull_command}`"
        + (f" (needs network: unset {_set_offline_variables()})" if offline() else "")
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


def _locate_one(model_set: ModelSet, role: str) -> tuple[Path, str]:
    ref = model_set.base if role == "base" else model_set.guide
    revision = model_set.base_revision if role == "base" else model_set.guide_revision
    if is_local(ref):
        folder = Path(ref).expanduser().resolve()
        if not folder.is_dir():
            raise _missing_error(model_set, role, ref, str(folder), "no such directory")
        found_revision = _local_revision(folder)
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
    base_dir, base_rev = _locate_one(model_set, "base")
    guide_dir, guide_rev = _locate_one(model_set, "guide")
    converted = _converted_guide_dir(model_set.guide, guide_rev)
    if (converted / "diffusion_pytorch_model.safetensors").is_file():
        guide_dir = converted
    return ModelPaths(model_set, base_dir, guide_dir, base_rev, guide_rev)


def is_available(model_set: ModelSet) -> bool:
    """True when :func:`locate` would succeed (for ``--engine auto``)."""
    try:
        locate(model_set)
    except ModelError:
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
        cause = f"offline mode is on ({_set_offline_variables() or 'HF_HUB_OFFLINE'}): unset it and run `{fix}` again"
    elif isinstance(exc, HfHubHTTPError):
        cause = f"the hub answered HTTP {status} for {ref}: try `{fix}` again later"
    else:  # connection refused, DNS, timeout, a full disk: the client's own words say which
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = f"{type(exc).__name__}: {first_line}; check the network and disk, and run `{fix}` again"
    return ModelError(f"could not {what} {ref}@{revision}: {cause}")


def _hub_errors() -> tuple[type[BaseException], ...]:
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
                f"cannot pull {', '.join(remote)}: offline mode is on ({_set_offline_variables()}); "
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
            hashes = _hub_hashes(api, ref, folder.name)
        except _hub_errors() as exc:
            raise hub_error(exc, ref, revision, what=f"download {role} model", fix=model_set.pull_command) from exc
        _write_manifest(ref, folder, hashes)
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
    tmp = target / "diffusion_pytorch_model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "source": str(source.name)})
    shutil.copyfile(paths.guide_dir / "config.json", target / "config.json")
    os.replace(tmp, target / "diffusion_pytorch_model.safetensors")
    _write_manifest(f"converted:{paths.model_set.guide}", target, {})
    return target


# --------------------------------------------------------------------------- verify


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


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file, which the hub reports for non-LFS files."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _manifest_path(ref: str, revision: str) -> Path:
    return cache_dir() / "models" / "manifests" / f"{re.sub(r'[^A-Za-z0-9._-]+', '--', ref)}@{revision}.json"


def _hub_hashes(api, ref: str, revision: str) -> dict[str, dict]:
    """{file: {"sha256"| "git_sha1": ..., "size": ...}} from the hub's metadata."""
    info = api.model_info(ref, revision=revision, files_metadata=True)
    out = {}
    for sibling in info.siblings or []:
        if sibling.lfs is not None:
            out[sibling.rfilename] = {"sha256": sibling.lfs.sha256, "size": sibling.lfs.size}
        elif sibling.blob_id:
            out[sibling.rfilename] = {"git_sha1": sibling.blob_id, "size": sibling.size}
    return out


def _write_manifest(ref: str, folder: Path, hub: dict[str, dict], revision: str | None = None) -> Path:
    """Record the hashes of the files in ``folder`` (hub's where known) for offline checks."""
    revision = revision or folder.name
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        files[rel] = hub.get(rel) or {"sha256": file_sha256(path), "size": path.stat().st_size}
    target = _manifest_path(ref, revision)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"ref": ref, "revision": revision, "files": files}, indent=2))
    return target


def record_manifest(folder: Path) -> Path:
    """Record the hashes of a local model folder, so that ``verify`` can check it later."""
    folder = Path(folder).resolve()
    return _write_manifest(str(folder), folder, {}, revision="local")


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
    files = sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    expected: dict[str, dict] = {}
    source = "manifest"
    if online and not is_local(ref) and not ref.startswith("converted:"):
        from huggingface_hub import HfApi

        try:
            expected, source = _hub_hashes(HfApi(token=token), ref, revision), "hub"
        except _hub_errors() as exc:
            raise hub_error(
                exc, ref, revision, what="read the hashes of",
                fix="facefix models verify --token TOKEN (or --offline, against the hashes recorded at pull)",
            ) from exc
    else:
        local = is_local(ref)
        manifest = _manifest_path(str(folder) if local else ref, "local" if local else revision)
        if manifest.is_file():
            expected = json.loads(manifest.read_text())["files"]
    checks = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
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
        converted = folder != _locate_one(model_set, role)[0]
        label = f"converted:{ref}" if converted else ref
        for check in _verify_folder(label, folder, revision, online and not converted, token):
            checks.append(replace(check, path=f"{role}/{check.path}"))
    return VerifyReport(model_set.name, tuple(checks))


def describe_model_sets() -> list[dict]:
    """Each registered model set, and the one ``FACEFIX_MODEL_SET`` names: on disk? verified? (no network).

    ``verified`` checks every file against the hashes recorded at pull (or
    the cache's blob names), so it reads the weights once: seconds per GB.
    A ``FACEFIX_MODEL_SET`` that names nothing usable is reported as a row
    with its error, not skipped.
    """
    sets: list[ModelSet] = list(REGISTRY.values())
    rows: list[dict] = []
    chosen_name = None
    if os.environ.get("FACEFIX_MODEL_SET", "").strip():
        try:
            chosen = resolve_model_set(None)
        except (UsageError, ModelError) as exc:
            rows.append({"name": os.environ["FACEFIX_MODEL_SET"], "default": True, "on_disk": False,
                         "verified": False, "detail": str(exc)})
        else:
            chosen_name = chosen.name
            if chosen.name not in REGISTRY:
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
