"""Model sets: which diffusion weights the diffusion restorer uses, and where they are.

A model set is a base latent-diffusion model in diffusers format (UNet, VAE,
text encoder, tokenizer, scheduler) plus a guide: a ControlNet fed with the
pre-cleaned face. Each half is a Hugging Face hub id, a local directory, or a
local single-file checkpoint (``v1-5-pruned-emaonly.safetensors``,
``control_v11f1e_sd15_tile.pth``: see :mod:`facefix.modelsets.single_file`).

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
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from facefix.common.atomic import atomic_write_bytes
from facefix.common.paths import data_dir, model_set_override
from facefix.errors import ModelError, UsageError

log = logging.getLogger(__name__)

#: Condition modes of a guide. ``image``: the guide takes the pre-cleaned face
#: itself in [0, 1] (a tile ControlNet, which has its own pixel encoder).
#: ``latent``: it takes the VAE latent of the pre-cleaned face (DiffBIR).
CONDITIONS = ("image", "latent")

#: The file naming a local model set's parts (see :func:`read_local_model_set`).
MODEL_SET_FILE = "facefix-modelset.json"

#: Suffixes of the single-file checkpoints people keep (A1111/ComfyUI, ControlNet 1.1).
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class ModelSet:
    """A base diffusion model plus the guide that steers it.

    Args:
        name: short name shown to users and used in artifact kinds.
        base: hub id or local directory of a diffusers-format base model, or a
            local SD 1.x single-file checkpoint.
        guide: hub id or local directory of a diffusers ``ControlNetModel``, or a
            local ControlNet single file.
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
        if (self.name in REGISTRY and REGISTRY[self.name] == self) or user_model_sets().get(self.name) == self:
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
    """True when ``ref`` names a local directory or file rather than a hub id."""
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()


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
        if candidate.exists():
            fields[part] = str(candidate)
        elif not (Path(ref).expanduser().exists() or "/" in ref):
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


def user_model_sets_dir() -> Path:
    """Where the model sets a user named (``facefix models add``, ``models pull --base/--guide``) are kept."""
    return data_dir() / "model-sets"


def user_model_sets() -> dict[str, ModelSet]:
    """The model sets this user added, by name.

    Raises:
        ModelError: a saved set's file is unreadable (names it and the fix).
    """
    folder = user_model_sets_dir()
    found: dict[str, ModelSet] = {}
    if not folder.is_dir():
        return found
    for file in sorted(folder.glob("*.json")):
        try:
            model_set = ModelSet(**json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{file}: this saved model set is unreadable ({exc}); delete it and add the set "
                             "again with `facefix models add`") from exc
        found[model_set.name] = model_set
    return found


#: ``add_model_set``'s ``variant`` when none is named: see :func:`default_variant`.
AUTO_VARIANT = "auto"


def default_variant(base: str) -> str | None:
    """The weight variant of ``base`` when the user names none.

    A hub base follows the registered default set's policy (``fp16``): ``pull``
    fetches a part's ``*.fp16.safetensors`` where the repository lists them and
    its full-precision files where it does not (:func:`facefix.modelsets.hub.pull_patterns`),
    so an fp32 download (about twice the size) happens only when the repository
    has nothing smaller. A local folder or file is read as it is (``None``: its
    plain weights first, then any fp16 ones).
    """
    return None if is_local(base) else REGISTRY[DEFAULT_MODEL_SET].variant


def add_model_set(name: str, *, base: str, guide: str | None = None, variant: str | None = AUTO_VARIANT,
                  condition: str = "image", description: str = "") -> ModelSet:
    """Save a model set under ``name`` so that ``--model-set NAME`` finds it (replacing one of that name).

    Local folders and single-file checkpoints are stored as absolute paths; hub ids as
    given (revision ``main``). Without ``guide``, the default set's guide (the SD 1.5
    tile ControlNet, fetched by ``facefix models pull NAME``). ``variant``: the base's
    weight variant; :data:`AUTO_VARIANT` (the default) is :func:`default_variant`'s,
    ``None`` the full-precision files.

    Raises:
        UsageError: a bad name, the name of a registered set, or a local file that is
            no checkpoint.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", name):
        raise UsageError(f"model set name {name!r}: use letters, digits, '.', '_', '+' and '-' (at most 64)")
    if name in REGISTRY:
        raise UsageError(f"{name!r} is a registered model set; give yours another name")
    guide = guide or REGISTRY[DEFAULT_MODEL_SET].guide
    if variant == AUTO_VARIANT:
        variant = default_variant(base)
    for role, value in (("--base", base), ("--guide", guide)):
        path = Path(value).expanduser()
        if path.is_file() and path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise UsageError(f"{role} {value}: a file must be a checkpoint ({', '.join(SINGLE_FILE_SUFFIXES)}); "
                             "or name a diffusers folder or a hub id")

    def ref(value: str) -> str:
        return str(Path(value).expanduser().resolve()) if is_local(value) else value

    model_set = ModelSet(name=name, base=ref(base), guide=ref(guide), variant=variant, condition=condition,
                         description=description or "added by you")
    folder = user_model_sets_dir()
    atomic_write_bytes(folder / f"{name}.json", (json.dumps(asdict(model_set), indent=2) + "\n").encode())
    return model_set


def resolve_model_set(spec: str | None = None, *, base: str | None = None, guide: str | None = None) -> ModelSet:
    """Turn what the user named into a :class:`ModelSet`.

    Args:
        spec: a registered name, a set this user added (``facefix models add``), a local
            model-set directory, or ``None`` for
            ``FACEFIX_MODEL_SET`` or else :data:`DEFAULT_MODEL_SET`.
        base: replace the set's base model (hub id or local directory).
        guide: replace the set's guide (hub id or local directory).
    """
    spec = spec or model_set_override() or DEFAULT_MODEL_SET
    added = {} if spec in REGISTRY else user_model_sets()
    if spec in REGISTRY:
        model_set = REGISTRY[spec]
    elif spec in added:
        model_set = added[spec]
    elif Path(spec).expanduser().is_dir():
        model_set = read_local_model_set(Path(spec))
    else:
        raise UsageError(
            f"unknown model set {spec!r}: use one of {', '.join(sorted({*REGISTRY, *added}))} "
            "or a local model-set directory (see `facefix models list`; `facefix models add` names one)"
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


