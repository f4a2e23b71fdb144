"""Sandbox children end with the process that started them (stdlib only: children import it
before they set their limits).

A child parsing a hostile document may run until its parent's wall-clock limit kills it; if the
parent itself dies first (SIGKILL, OOM), nobody would. `die_with_parent` asks Linux to send the
child SIGKILL when its parent thread exits (PR_SET_PDEATHSIG) and exits at once if the parent is
already gone. The parent passes its pid in PARENT_ENV (`child_env`), because a parent may
legitimately be pid 1 (a worker as a container's main process).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PARENT_ENV = "FLYWHEEL_SANDBOX_PARENT"
_PR_SET_PDEATHSIG = 1


def child_env() -> dict[str, str]:
    """The environment for a sandbox child of this process."""
    return {**os.environ, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """Be killed when the parent dies; exit now if it already has. No-op off Linux."""
    expected = os.environ.get(PARENT_ENV)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the parent's own limits are all there is
    if expected and os.getppid() != int(expected):
        os._exit(1)  # the parent died before the request took effect
