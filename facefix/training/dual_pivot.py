"""Dual-Pivot Tuning end to end: generic data, stage 1, stage 2, artifacts.

``run_dual_pivot`` is what ``facefix enroll NAME DIR --engine diffusion``
calls after it has aligned the person's references. It returns the two
artifacts as ``{kind: (tensors, settings)}`` for ``ProfileStore.commit_artifact``:

* ``diffusion/<set>/unet_lora`` -- the stage-1 UNet LoRA (diffusers layout);
* ``diffusion/<set>/guide`` -- the stage-2 guide adapter.

Both stages checkpoint into ``work_dir`` (``ProfileStore.work_dir``): after a
Ctrl-C, the same call resumes where the last checkpoint was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facefix.profiles.kinds import guide_kind, unet_lora_kind
from facefix.restorers.base import Restorer
from facefix.training import diffusion_loop as common
from facefix.training.generic_faces import cached_class_images, cached_generic_faces
from facefix.training.stage1 import Stage1Config, train_stage1
from facefix.training.stage2 import Degrade, Stage2Config, train_stage2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DualPivotConfig:
    """Settings of a whole personalization.

    Args:
        stage1: stage-1 settings.
        stage2: stage-2 settings.
        class_images: prior-preservation images to paint once with the base
            model from stage 1's class prompt (0: no prior preservation).
        generic_faces: generic faces to paint once for stage 2 when fewer are given.
        generation_steps: sampler steps for painting both.
    """

    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    class_images: int = 100
    generic_faces: int = 200
    generation_steps: int = 25


@dataclass(frozen=True)
class GenerationProgress:
    """Reported while painting class images / generic faces."""

    stage: str
    step: int
    total: int


def run_dual_pivot(
    parts,
    references: np.ndarray,
    *,
    degrade: Degrade,
    precleaner: Restorer | None = None,
    generic_faces: np.ndarray | None = None,
    class_images: np.ndarray | None = None,
    config: DualPivotConfig = DualPivotConfig(),
    work_dir: Path | None = None,
    align: Callable[[np.ndarray], np.ndarray | None] | None = None,
    progress: Callable[[common.TrainProgress | GenerationProgress], None] | None = None,
) -> dict[str, tuple[dict, dict]]:
    """Personalize the diffusion restorer for one person.

    Args:
        parts: the freshly loaded base model set (no adapters); it carries both
            adapters on return.
        references: the person's aligned crops (N, 512, 512, 3) float32 [0, 1].
        degrade: the degradation model used for the fast restorer's training.
        precleaner: the fast restorer (stage 2 conditions the guide on its output).
        generic_faces: aligned generic faces (other enrolled people's
            references, a user folder); topped up with painted ones to
            ``config.generic_faces``.
        class_images: prior-preservation images; None paints ``config.class_images``
            from ``config.stage1.class_prompt``, the prompt stage 1 trains them under.
        config: settings.
        work_dir: checkpoints (``stage1/``, ``stage2/``) and nothing else.
        align: turns a painted portrait into an aligned crop (None drops it);
            without it painted portraits are used as they are.
        progress: one callback for the whole run (painting, stage 1, stage 2).

    Returns:
        ``{unet_lora_kind(set): (tensors, settings), guide_kind(set): (tensors, settings)}``.
    """
    key = parts.provenance.get("model_set_key") or parts.provenance.get("model_set", "model")
    work_dir = Path(work_dir) if work_dir is not None else None

    def painting(stage):
        return (lambda done, total: progress(GenerationProgress(stage, done, total))) if progress else None

    # Generic data first: it needs the base UNet without the person's LoRA.
    # Class images are the base model's answer to the very prompt stage 1
    # trains them under (DreamBooth); anything else would shift that prompt's
    # prior instead of preserving it.
    if class_images is None and config.class_images > 0 and config.stage1.prior_weight > 0:
        class_images = cached_class_images(
            parts, config.stage1.class_prompt, config.class_images, seed=1, steps=config.generation_steps,
            progress=painting("class images"),
        )  # fmt: skip
    have = 0 if generic_faces is None else len(generic_faces)
    if have < config.generic_faces:
        painted = cached_generic_faces(
            parts, config.generic_faces - have, seed=2, postprocess=align, progress=painting("generic faces"),
            steps=config.generation_steps,
        )  # fmt: skip
        painted = _resize(painted, references.shape[1])
        generic_faces = painted if generic_faces is None else np.concatenate([generic_faces, painted])

    stage1 = train_stage1(
        parts,
        references,
        config.stage1,
        class_images=class_images,
        work_dir=work_dir / "stage1" if work_dir else None,
        progress=progress,
    )
    stage2 = train_stage2(
        parts,
        generic_faces,
        degrade,
        pivot_prompt=config.stage1.pivot_prompt,
        unet_lora=stage1.tensors,
        precleaner=precleaner,
        config=config.stage2,
        work_dir=work_dir / "stage2" if work_dir else None,
        progress=progress,
    )
    return {
        unet_lora_kind(key): (stage1.tensors, stage1.settings),
        guide_kind(key): (stage2.tensors, stage2.settings),
    }


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if len(images) == 0:
        # an empty set still has to stack with faces of ``size`` (alignment may drop every painted face)
        return np.zeros((0, size, size, images.shape[3] if images.ndim == 4 else 3), np.float32)
    if images.shape[1] == size:
        return images
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
    tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return tensor.permute(0, 2, 3, 1).numpy().astype(np.float32)
