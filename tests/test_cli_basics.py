"""The real entry point as a process (``python -m facefix``): its exit status and its two streams.

The other CLI tests run the same ``main`` in-process (tests/clirun.py); these
keep a new interpreter, where the process itself is what is tested.
"""

from __future__ import annotations

from clirun import facefix_process as run_cli

from facefix import __version__


def test_version_prints_on_stdout():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"facefix {__version__}"


def test_unknown_option_is_a_usage_error():
    result = run_cli("--no-such-option")
    assert result.returncode == 2
    assert "no-such-option" in result.stderr
