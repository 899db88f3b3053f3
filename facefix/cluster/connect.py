"""Import Ray (an optional extra) or say how to get it; join a cluster, or start one here; quietly.

``--cluster`` takes what ``ray.init(address=...)`` takes, plus ``auto``:

* ``auto``: the cluster ``RAY_ADDRESS`` names, else one started on this machine by
  ``ray start``, else a new local one (so the same command works on a laptop);
* ``local``: always a new local cluster, stopped at the end of the run;
* ``HOST:PORT``: the head node's GCS address (``ray start --head`` prints it);
* ``ray://HOST:PORT``: Ray Client, for a driver outside the cluster.

When Ray is already initialised in this process (a caller, e.g. a notebook or a
test, connected first), that connection is used and left open.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from facefix.errors import UsageError

CLUSTER_HELP = ("Run on a Ray cluster: auto (RAY_ADDRESS, else a cluster started here, else a new local one), "
                "local, HOST:PORT or ray://HOST:PORT. Needs pip install \"facefix[cluster]\".")

#: Ray's own switches that keep it offline and quiet: no usage statistics sent home.
QUIET_RAY = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def require_ray() -> ModuleType:
    """Ray, or a usage error (exit 2) that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError('--cluster needs Ray, which is not installed; pip install "facefix[cluster]"') from exc
    return ray


def check_address(address: str) -> str:
    """``address`` as given, or a usage error for one that cannot name a cluster."""
    text = address.strip()
    if text in {"auto", "local"} or text.startswith("ray://"):
        return text
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit()):
        raise UsageError(f"--cluster {address!r} names no cluster; give auto, local, HOST:PORT or ray://HOST:PORT")
    return text


def connect(address: str) -> bool:
    """Join (or start) the cluster ``address`` names; True when this call connected (then
    :func:`disconnect` at the end), False when Ray was already initialised here."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    for key, value in QUIET_RAY.items():
        os.environ.setdefault(key, value)
    # Ray's start-up notes (its token authentication, the local instance) are not facefix's to print.
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.ERROR)
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=False)
    except ConnectionError as exc:
        raise UsageError(f"--cluster {address}: no Ray cluster answers there ({exc}); start one with "
                         "'ray start --head' or give --cluster auto") from exc
    finally:
        ray_log.setLevel(level)
    return True


def disconnect(connected: bool) -> None:
    """Leave the cluster (and stop it, when this run started it locally)."""
    if connected:
        require_ray().shutdown()
