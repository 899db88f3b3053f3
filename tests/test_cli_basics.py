from __future__ import annotations

import subprocess
import sys

from facefix import __version__


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facefix", *args], capture_output=True, text=True, env=env
    )


def test_version_prints_on_stdout():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"facefix {__version__}"


def test_unknown_option_is_a_usage_error():
    result = run_cli("--no-such-option")
    assert result.returncode == 2
    assert "no-such-option" in result.stderr
