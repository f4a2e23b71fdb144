"""`flywheel dev`, the quick start's run-everything command, on a fresh data directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runtime.devserver import free_port

ROOT = Path(__file__).resolve().parents[2]


def start_dev(tmp_path: Path, attempts: int = 3) -> tuple[subprocess.Popen, dict[str, int], Path, Path]:
    """`flywheel dev` on free ports in a fresh directory, up to the line with the demo API key:
    (process, ports, its directory, its log). `free_port` only finds a port that was free: when
    another process takes one before the dev command binds it, the command stops saying so, and
    it is started again on other ports."""
    for attempt in range(attempts):
        ports = {name: free_port() for name in ("api", "ui", "shop", "temporal", "smtp")}
        env = {**os.environ, "FLYWHEEL_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
               "FLYWHEEL_SMTP_PORT": str(ports["smtp"])}
        for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_SECRET_KEYS", "FLYWHEEL_LINK_SECRET"):
            env.pop(key, None)
        cwd = tmp_path / f"attempt-{attempt}"
        cwd.mkdir()
        log = cwd / "dev.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev", "--port", str(ports["api"]), "--ui-port", str(ports["ui"]),
             "--shop-port", str(ports["shop"])], cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while "Demo API key:" not in log.read_text():
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                stop(proc)
                raise AssertionError(log.read_text())
            time.sleep(0.2)
        else:
            return proc, ports, cwd, log
        stop(proc)  # what it started may still run
        text = log.read_text()
        assert "in use" in text.lower() and attempt + 1 < attempts, text  # only a port race retries
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # the whole group has already exited
    proc.wait(timeout=30)


def test_flywheel_dev_runs_the_demo_refund_end_to_end(tmp_path):
    proc, ports, cwd, log = start_dev(tmp_path)
    try:
        time.sleep(0.3)
        key = log.read_text().strip().splitlines()[-1]
        assert key.startswith("fw_")
        api = f"http://127.0.0.1:{ports['api']}"
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10).status_code == 200
        assert {p["procedure_id"] for p in httpx.get(f"{api}/v1/procedures", headers=auth).json()} >= {"refund"}

        run = httpx.post(f"{api}/v1/procedures/refund/runs", headers=auth,
                         json={"inputs": {"email": "bob@example.com"}}).json()
        deadline = time.monotonic() + 30
        while (state := httpx.get(f"{api}/v1/runs/{run['run_id']}", headers=auth).json())["status"] != "succeeded":
            assert state["status"] in ("running", "waiting") and time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["messages"] == ["Your refund of $40.00 has been processed."]
        assert (cwd / ".flywheel" / "temporal.db").exists()  # persistent dev server state
    finally:
        stop(proc)
