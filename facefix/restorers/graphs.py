"""The denoiser call replayed from a CUDA graph.

At batch 1 a 512 face keeps an H100 waiting on Python: the UNet + guide call
launches ~2,000 small kernels, and launching them took ~47 ms a step, as long
as a whole batch of 8 (docs/benchmarks.md). A CUDA graph records the launches
once per input shape and replays them with one call. The weights are read
where they live, so an adapter merged in place is seen; which adapter is
*active* is frozen at capture time, so each restorer keeps its own graphs
(a person's restorer always runs with that person's adapter active).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

_POOLS: dict[torch.device, tuple] = {}


def _shared_pool(device: torch.device):
    """One memory pool for every capture on ``device``.

    Each person's restorer keeps its own graphs; with a pool each, ten people
    would hold ten copies of the UNet's activations. Sharing is safe here
    because replays never overlap (one sampling loop at a time), inputs are
    copied into buffers allocated outside the pool, and every output is
    cloned right after its replay, before any other graph runs.
    """
    if device not in _POOLS:
        _POOLS[device] = torch.cuda.graph_pool_handle()
    return _POOLS[device]


Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class GraphedDenoiser:
    """``denoise(latents, t, unet_embeds, guide_embeds, condition)`` through CUDA graphs.

    One graph per set of input shapes and dtypes, captured on first use after
    two warm-up calls on a side stream. If capture fails (an operation that
    cannot be captured, an older driver), it says so once and runs ``denoise``
    directly from then on.

    Args:
        denoise: the eager call; must not synchronize with the host.
        max_graphs: captured shapes kept (each holds its activations' memory).
    """

    def __init__(self, denoise: Denoise, *, max_graphs: int = 4):
        self.denoise = denoise
        self.max_graphs = max_graphs
        self.failed = False
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, *inputs: torch.Tensor, tag: object = None) -> torch.Tensor:
        """Run ``denoise(*inputs)``; ``tag`` names any non-tensor setting baked into a capture."""
        if self.failed or not all(x.is_cuda for x in inputs):
            return self.denoise(*inputs)
        key = (tag, *((tuple(x.shape), x.dtype, x.device) for x in inputs))
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(inputs)
            except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
                self.failed = True
                log.warning("CUDA graph capture failed (%s: %s); sampling without graphs", type(exc).__name__, exc)
                return self.denoise(*inputs)
            if len(self._graphs) >= self.max_graphs:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = entry
        graph, static_inputs, static_output = entry
        for static, value in zip(static_inputs, inputs, strict=True):
            static.copy_(value)
        graph.replay()
        # The next replay overwrites the output buffer: hand out a copy.
        return static_output.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [x.detach().clone() for x in inputs]
        side = torch.cuda.Stream(device=static_inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy initialisation, library workspaces
                self.denoise(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        pool = _shared_pool(static_inputs[0].device)
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):  # folder runs use threads
            static_output = self.denoise(*static_inputs)
        return graph, static_inputs, static_output

    def clear(self) -> None:
        """Drop the captured graphs (and the memory they hold)."""
        self._graphs.clear()
