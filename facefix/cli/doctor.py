"""``facefix doctor``: what this machine can do, and what is missing."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from facefix.cli.common import JsonOpt, out
from facefix.doctor import collect


def _yes(value: bool) -> str:
    return "[green]yes[/green]" if value else "[yellow]no[/yellow]"


def doctor_command(*, json_out: JsonOpt = False) -> None:
    """Show torch and its device, CUDA/xformers, face backends, directories and weights."""
    info = collect()
    if json_out:
        out.print_json(json.dumps(info))
        return
    table = Table("check", "value", show_header=False)
    table.add_row("facefix", info["facefix"])
    table.add_row("python", f"{info['python']} ({info['platform']})")
    table.add_row("torch", f"{info['torch']} — device [bold]{info['device']}[/bold], {info['cpu_threads']} CPU threads")
    devices = ", ".join(info["cuda_devices"])
    table.add_row("CUDA", _yes(info["cuda_available"]) + (f" — {devices}" if devices else ""))
    xf = info["xformers"]
    table.add_row("xformers", _yes(xf.get("installed", False) and "error" not in xf) + " " + (xf.get("version") or xf.get("note") or xf.get("error", "")))
    for backend in info["face_backends"]:
        chosen = " (auto uses this)" if backend["backend"] == info["face_backend_auto"] else ""
        detail = f"models: {backend['models']}" + (f" — fix: {backend['fix']}" if backend["fix"] else "")
        table.add_row(f"faces: {backend['backend']}{chosen}", f"{_yes(backend['usable'])} {detail}")
    table.add_row("data directory", info["data_dir"])
    table.add_row("cache directory", info["cache_dir"])
    table.add_row("offline", _yes(info["offline"]))
    for weights in info["diffusion_weights"]:
        state = ("[green]on disk, verified[/green]" if weights["verified"] else
                 "[red]on disk, NOT verified[/red]" if weights["on_disk"] else "[yellow]not on disk[/yellow]")
        default = " (default)" if weights["default"] else ""
        table.add_row(f"diffusion: {escape(weights['name'])}{default}", f"{state} — {escape(weights['detail'])}")
    out.print(table, highlight=False)
