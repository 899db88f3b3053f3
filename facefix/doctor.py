"""What ``facefix doctor`` checks: versions, devices, backends, directories, weights."""

from __future__ import annotations

import importlib.util
import platform

from facefix import __version__
from facefix.common import paths
from facefix.common.paths import offline as models_offline
from facefix.faces import describe_backends, resolve_backend


def _torch_info() -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps_available": torch.backends.mps.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    info["device"] = "cuda" if info["cuda_available"] else ("mps" if info["mps_available"] else "cpu")
    return info


def _xformers() -> dict:
    if importlib.util.find_spec("xformers") is None:
        return {"installed": False, "note": "optional, GPU only: pip install xformers"}
    try:
        import xformers

        return {"installed": True, "version": xformers.__version__}
    except Exception as exc:  # a broken build is worth reporting, not crashing on
        return {"installed": True, "error": str(exc)}


def _diffusion_weights() -> list[dict]:
    from facefix.modelsets.verify import describe_model_sets

    return describe_model_sets()


def collect() -> dict:
    """Everything doctor reports, as a JSON-ready dict."""
    return {
        "facefix": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **_torch_info(),
        "xformers": _xformers(),
        "face_backend_auto": resolve_backend("auto"),
        "face_backends": describe_backends(),
        "data_dir": str(paths.data_dir()),
        "cache_dir": str(paths.cache_dir()),
        "offline": models_offline(),
        "diffusion_weights": _diffusion_weights(),
    }
