"""CPU priority of the worker process (settings.worker_nice) and how to read it back.

With autogroup scheduling (the Linux default on most distributions and VMs) the kernel first
shares the CPU between sessions and a nice value only orders threads within their session, so a
worker that leads its own session (started by a service manager, in a container, by `setsid`, or
by `flywheel dev`/the benchmarks) lowers its session's priority too. A worker sharing a
terminal's session with other programs leaves the session alone.

A task outside any autogroup (a kernel without autogroup scheduling, or a task placed in a cgroup
of its own, as on some CI hosts) has an empty or no /proc/PID/autogroup: there the nice value is
all there is.
"""
from __future__ import annotations

import os
from pathlib import Path


def nice_of(pid: int) -> int:
    """The process's nice value (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def autogroup_nice(pid: int) -> int | None:
    """The nice value of the process's autogroup, or None when it is in no autogroup."""
    try:
        return parse_autogroup(Path(f"/proc/{pid}/autogroup").read_text())
    except OSError:
        return None


def parse_autogroup(text: str) -> int | None:
    """The nice value in /proc/PID/autogroup's text ("/autogroup-85 nice 0"); None for the
    empty text of a task in no autogroup."""
    fields = text.split()
    if len(fields) != 3 or fields[1] != "nice":
        return None
    return int(fields[2])


def lower_priority(nice: int) -> None:
    """Run this process `nice` steps below normal CPU priority, and its session too when the
    process leads the session and the session is an autogroup. Call it before any thread
    starts: every thread inherits it."""
    if nice <= 0:
        return
    os.nice(nice)
    if os.getsid(0) == os.getpid() and autogroup_nice(os.getpid()) is not None:
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:
            pass  # not permitted here: the nice value is all there is
