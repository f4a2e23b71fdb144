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


def test_flywheel_dev_runs_the_demo_refund_end_to_end(tmp_path):
    ports = {name: free_port() for name in ("api", "ui", "shop", "temporal", "smtp")}
    env = {**os.environ, "FLYWHEEL_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
           "FLYWHEEL_SMTP_PORT": str(ports["smtp"])}
    for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_SECRET_KEYS", "FLYWHEEL_LINK_SECRET"):
        env.pop(key, None)
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "dev", "--port", str(ports["api"]), "--ui-port", str(ports["ui"]),
         "--shop-port", str(ports["shop"])], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Demo API key:" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
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
        assert (tmp_path / ".flywheel" / "temporal.db").exists()  # persistent dev server state
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
