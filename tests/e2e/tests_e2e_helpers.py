"""Small HTTP helpers of the end-to-end tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from db.engine import make_engine, session_scope
from db.secrets import set_secret
from db.tenants import create_tenant, update_tenant_settings
from security.secrets import SecretBox
from settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def publish(api: str, headers: dict, text: str, content_type: str) -> dict:
    r = httpx.post(f"{api}/v1/procedures", content=text,
                   headers={**headers, "Content-Type": content_type}, timeout=15)
    assert r.status_code in (200, 201), r.text
    return r.json()


def start_run(api: str, headers: dict, procedure: str, inputs: dict, **extra) -> dict:
    r = httpx.post(f"{api}/v1/procedures/{procedure}/runs", json={"inputs": inputs, **extra},
                   headers=headers, timeout=15)
    assert r.status_code == 201, r.text
    return r.json()


def get_run(api: str, headers: dict, run_id: str) -> httpx.Response:
    return httpx.get(f"{api}/v1/runs/{run_id}", headers=headers, timeout=15)


def wait_status(api: str, headers: dict, run_id: str, status: str, timeout: float = 60) -> dict:
    """Poll the run until it has `status`; fails with the last state seen."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        r = get_run(api, headers, run_id)
        if r.status_code == 200:
            last = r.json()
            if last.get("status") == status:
                return last
            if last.get("status") in ("failed", "succeeded", "cancelled", "handed_off"):
                break
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {status}; last state: {last}")


def approval_links(body: str) -> dict[str, str]:
    return {"approve": re.search(r"^Approve: (\S+)$", body, re.M).group(1),
            "reject": re.search(r"^Reject: (\S+)$", body, re.M).group(1)}


def make_tenant(e2e_settings: Settings, shop_url: str) -> dict:
    host = shop_url.split("://")[1]
    engine = make_engine(e2e_settings.resolved_database_url())
    box = SecretBox.from_setting(e2e_settings.secret_keys)
    with session_scope(engine) as session:
        row, key = create_tenant(session, f"acme-{uuid.uuid4().hex[:6]}")
        update_tenant_settings(session, row.id, allowed_hosts=[host],
                               connector_base_urls={"shopify": f"{shop_url}/admin/api/2024-01"})
        set_secret(session, box, row.id, "shop_domain", host)
        set_secret(session, box, row.id, "shop_token", "shpat_demo")
    engine.dispose()
    return {"id": row.id, "headers": {"Authorization": f"Bearer {key}"}}


class WorkerProcess:
    """`python worker.py` as a child process, configured through FLYWHEEL_* variables."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log, self.proc = settings, log, None

    def env(self) -> dict[str, str]:
        """Every setting as its FLYWHEEL_* variable (as a deployment would configure a worker)."""
        values = self.settings.model_dump(mode="json")
        return {**os.environ, **{f"FLYWHEEL_{k.upper()}": str(v) for k, v in values.items()}}

    def start(self) -> "WorkerProcess":
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=self.env(),
                                     stdout=out, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight activities are lost."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker logged that it polls (its signal handlers are installed by then)."""
        deadline = time.monotonic() + timeout
        while "worker polling" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=30)
        return self.proc.returncode if self.proc else 0
