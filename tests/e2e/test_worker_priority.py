"""The worker runs below normal CPU priority (settings.worker_nice) so that on a shared host the
API's acknowledgements come first: its nice value, and its session's autogroup nice when it leads
its own session; a worker in someone else's session leaves that session alone."""
from __future__ import annotations

import os
import subprocess
import sys

from runtime.priority import autogroup_nice, nice_of
from tests_e2e_helpers import ROOT, WorkerProcess


def test_a_worker_lowers_its_own_priority_and_not_its_parents_session(e2e_settings, tmp_path):
    ours = autogroup_nice(os.getpid())
    worker = WorkerProcess(e2e_settings.model_copy(update={"worker_nice": 7}), tmp_path / "w.log").start()
    try:
        worker.wait_ready()
        assert nice_of(worker.proc.pid) == min(19, nice_of(os.getpid()) + 7)
        assert autogroup_nice(worker.proc.pid) == ours  # the test's session, untouched
    finally:
        worker.kill()


def test_a_worker_leading_its_own_session_lowers_the_session(e2e_settings, tmp_path):
    settings = e2e_settings.model_copy(update={"worker_nice": 10})
    env = WorkerProcess(settings, tmp_path / "w.log").env()
    log = tmp_path / "w.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        worker = WorkerProcess(settings, log)
        worker.proc = proc
        worker.wait_ready()
        assert nice_of(proc.pid) == min(19, nice_of(os.getpid()) + 10)
        if autogroup_nice(proc.pid) is not None:  # a task in no autogroup has none to lower
            assert autogroup_nice(proc.pid) == 10
    finally:
        proc.kill()
        proc.wait()


def test_worker_nice_zero_leaves_the_priority_alone(e2e_settings, tmp_path):
    worker = WorkerProcess(e2e_settings.model_copy(update={"worker_nice": 0}), tmp_path / "w.log").start()
    try:
        worker.wait_ready()
        assert nice_of(worker.proc.pid) == nice_of(os.getpid())
    finally:
        worker.kill()
