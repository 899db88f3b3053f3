"""A faithful fake of the Hugging Face hub for tests: only the network is fake.

What ``facefix models pull`` asks the hub for (``list_repo_files``,
``model_info(files_metadata=True)``, ``snapshot_download``) is answered from
repositories held in memory, and the download writes exactly what
huggingface_hub writes into its cache:

* ``models--org--name/blobs/<sha256 of LFS files | git blob id of the rest>``,
* ``snapshots/<commit>/<path>`` relative symlinks to the blobs,
* ``refs/<branch>`` holding the commit,
* ``trees/<commit>.json``, the repository's *whole* file list, written with
  huggingface_hub's own ``write_tree_cache``: huggingface_hub (2.4) checks a
  local snapshot against it and raises ``IncompleteSnapshotError`` for a file
  that is on the hub but was never downloaded.

The answer of a download is then the real ``snapshot_download`` run with
``local_files_only=True`` on that cache, and ``locate`` goes through the
real function untouched. Hub failures are huggingface_hub's own exception
classes with a real HTTP response.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

#: Suffixes the hub's default ``.gitattributes`` stores with LFS.
LFS_SUFFIXES = {".bin", ".safetensors", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack", ".h5"}
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]

    def is_lfs(self, path: str) -> bool:
        return Path(path).suffix in LFS_SUFFIXES


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    failures: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)

    def add(self, ref: str, files: dict[str, bytes], commit: str) -> None:
        self.repos[ref] = Repo(commit, dict(files))

    def fail(self, ref: str, exc: BaseException) -> None:
        """Every later hub call about ``ref`` raises ``exc``."""
        self.failures[ref] = exc

    def _repo(self, ref: str, revision: str | None) -> Repo:
        from huggingface_hub.errors import (
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if ref in self.failures:
            raise self.failures[ref]
        if ref not in self.repos:
            raise RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: {ref}", response=http_response(404, ref))
        repo = self.repos[ref]
        if revision not in (None, "main", repo.commit):
            raise RevisionNotFoundError(f"404 Client Error. Revision Not Found for url: {ref}@{revision}",
                                        response=http_response(404, ref))
        return repo

    # ---- the HfApi methods pull and verify call
    def list_repo_files(self, api, repo_id, *, revision=None, **_):
        self.calls.append(("list_repo_files", repo_id, revision))
        return sorted(self._repo(repo_id, revision).files)

    def model_info(self, api, repo_id, *, revision=None, files_metadata=False, **_):
        from huggingface_hub.hf_api import ModelInfo

        self.calls.append(("model_info", repo_id, revision, api.token))
        repo = self._repo(repo_id, revision)
        siblings = []
        for path, data in sorted(repo.files.items()):
            if repo.is_lfs(path):
                pointer = lfs_pointer(data)
                siblings.append({"rfilename": path, "size": len(data), "blobId": git_blob_id(pointer),
                                 "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}})
            else:
                siblings.append({"rfilename": path, "size": len(data), "blobId": git_blob_id(data)})
        return ModelInfo(id=repo_id, sha=repo.commit, siblings=siblings if files_metadata else [{"rfilename": s["rfilename"]} for s in siblings])

    def snapshot_download(self, real, repo_id, *, revision=None, allow_patterns=None, local_files_only=False,
                          cache_dir=None, token=None, **kwargs):
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
        from huggingface_hub.utils import filter_repo_objects

        if local_files_only:
            return real(repo_id, revision=revision, allow_patterns=allow_patterns, local_files_only=True,
                        cache_dir=cache_dir, **kwargs)
        self.calls.append(("snapshot_download", repo_id, revision, tuple(allow_patterns or ()), token))
        repo = self._repo(repo_id, revision)
        storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        entries = {}
        for path, data in repo.files.items():
            if repo.is_lfs(path):
                entries[path] = TreeCacheEntry(size=len(data), blob_id=git_blob_id(lfs_pointer(data)),
                                               lfs_sha256=hashlib.sha256(data).hexdigest(), lfs_size=len(data))
            else:
                entries[path] = TreeCacheEntry(size=len(data), blob_id=git_blob_id(data))
        write_tree_cache(str(storage), repo.commit, entries)
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / (revision or "main")).write_text(repo.commit)
        (storage / "blobs").mkdir(exist_ok=True)
        for path in filter_repo_objects(items=list(repo.files), allow_patterns=allow_patterns):
            data = repo.files[path]
            entry = entries[path]
            blob = storage / "blobs" / (entry.lfs_sha256 or entry.blob_id)
            blob.write_bytes(data)
            link = storage / "snapshots" / repo.commit / path
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to("../" * (len(Path(path).parts) - 1) + f"../../blobs/{blob.name}")
        return real(repo_id, revision=repo.commit, allow_patterns=allow_patterns, local_files_only=True,
                    cache_dir=cache_dir, **kwargs)

    def install(self, monkeypatch) -> "FakeHub":
        import huggingface_hub

        real = huggingface_hub.snapshot_download
        monkeypatch.setattr(huggingface_hub, "snapshot_download",
                            lambda repo_id, **kw: self.snapshot_download(real, repo_id, **kw))
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                            lambda api, repo_id, **kw: self.list_repo_files(api, repo_id, **kw))
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                            lambda api, repo_id, **kw: self.model_info(api, repo_id, **kw))
        return self


def http_response(status: int, ref: str):
    """A real response of huggingface_hub's HTTP client, as its errors carry."""
    from huggingface_hub.errors import (
        HTTPError,  # the client's module: requests or httpx2
    )

    client = __import__(HTTPError.__module__.split(".")[0])
    request = client.Request("GET", f"https://huggingface.co/api/models/{ref}")
    return client.Response(status, request=request)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _fp16(data: bytes) -> bytes:
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_bytes(data).items()}
    return save_bytes(state, metadata={"format": "pt"})


def _pickle(data: bytes) -> bytes:
    """The same weights as a pickled state dict (``torch.save``), as the hub's ``.bin`` files are."""
    buffer = io.BytesIO()
    torch.save(load_bytes(data), buffer)
    return buffer.getvalue()


def sd15_like_base(base: Path) -> dict[str, bytes]:
    """A diffusers base folder laid out as stable-diffusion-v1-5/stable-diffusion-v1-5 is on the hub.

    Each part's weights as ``.safetensors``, ``.fp16.safetensors``, ``.bin``
    and ``.fp16.bin`` (the UNet's also ``.non_ema``), the single-file
    checkpoints, safety checker and feature extractor, README and
    .gitattributes; configs with the keys the real ones have; the tokenizer
    config with ``AddedToken`` dicts, as the real one.
    """
    files = folder_files(base)
    for sub, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        weights = files[f"{sub}/{stem}.safetensors"]
        half = _fp16(weights)
        files[f"{sub}/{stem}.fp16.safetensors"] = half
        files[f"{sub}/{stem}.bin" if sub != "text_encoder" else f"{sub}/pytorch_model.bin"] = _pickle(weights)
        files[f"{sub}/{stem}.fp16.bin" if sub != "text_encoder" else f"{sub}/pytorch_model.fp16.bin"] = _pickle(half)
    files["unet/diffusion_pytorch_model.non_ema.safetensors"] = files["unet/diffusion_pytorch_model.safetensors"]
    files["v1-5-pruned-emaonly.safetensors"] = b"single-file checkpoint: never pulled"
    files["v1-5-pruned.ckpt"] = b"single-file checkpoint: never pulled"
    files["safety_checker/config.json"] = b'{"architectures": ["StableDiffusionSafetyChecker"]}'
    files["safety_checker/model.fp16.safetensors"] = b"safety checker: not used"
    files["feature_extractor/preprocessor_config.json"] = b'{"crop_size": 224}'
    files["README.md"] = b"---\nlicense: creativeml-openrail-m\n---\n"
    files[".gitattributes"] = GITATTRIBUTES
    text_config = json.loads(files["text_encoder/config.json"])
    text_config.pop("dtype", None)
    text_config.update({"_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
                        "torch_dtype": "float32", "transformers_version": "4.22.0.dev0"})
    files["text_encoder/config.json"] = json.dumps(text_config, indent=2).encode()

    def added(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    tokenizer_config = json.loads(files["tokenizer/tokenizer_config.json"])
    files["tokenizer/tokenizer_config.json"] = json.dumps({
        "add_prefix_space": False, "bos_token": added("<|startoftext|>"), "do_lower_case": True,
        "eos_token": added("<|endoftext|>"), "errors": "replace",
        "model_max_length": tokenizer_config["model_max_length"], "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer", "unk_token": added("<|endoftext|>"),
    }, indent=2).encode()
    return files


def controlnet_like_guide(guide: Path, *, safetensors: bool, pickle: bool) -> dict[str, bytes]:
    """A ControlNet folder laid out as lllyasviel's repos are: weights as a pickle and/or safetensors, images, README."""
    files = folder_files(guide)
    weights = files.pop("diffusion_pytorch_model.safetensors")
    if safetensors:
        files["diffusion_pytorch_model.safetensors"] = weights
    if pickle:
        files["diffusion_pytorch_model.bin"] = _pickle(weights)
    config = json.loads(files["config.json"])
    config.update({"_diffusers_version": "0.16.0.dev0", "_name_or_path": "/home/lvmin/.cache/huggingface/hub/tile"})
    files["config.json"] = json.dumps(config, indent=2).encode()
    files["images/original.png"] = b"\x89PNG example image: never pulled"
    files["README.md"] = b"---\nlicense: openrail\n---\n"
    files[".gitattributes"] = GITATTRIBUTES
    return files
