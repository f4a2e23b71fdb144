"""Fixtures of the end-to-end tests: real Temporal dev server, demo shop over HTTP, SMTP server,
the API served by uvicorn, workers in-process or as killable subprocesses."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from api.app import create_app
from demo.server import ThreadedServer
from demo.shop import ShopState, create_shop_app
from runtime.devserver import DevServer, free_port
from runtime.mailcatcher import MailCatcher
from settings import Settings
from tests_e2e_helpers import WorkerProcess, make_tenant

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory) -> Iterator[DevServer]:
    tmp = tmp_path_factory.mktemp("temporal")
    with DevServer(db_file=tmp / "dev.db", log_file=tmp / "dev.log") as server:
        yield server


@pytest.fixture(scope="session")
def shop_server() -> Iterator[tuple[ThreadedServer, ShopState]]:
    state = ShopState()
    with ThreadedServer(create_shop_app(state)) as server:
        yield server, state


@pytest.fixture
def shop(shop_server) -> tuple[str, ShopState]:
    server, state = shop_server
    state.reset()
    return server.url, state


@pytest.fixture(scope="session")
def mailbox() -> Iterator[MailCatcher]:
    with MailCatcher() as catcher:
        yield catcher


@pytest.fixture
def mail(mailbox: MailCatcher) -> MailCatcher:
    mailbox.messages.clear()
    return mailbox


@pytest.fixture
def e2e_settings(database_url: str, tmp_path, dev_server: DevServer, mail: MailCatcher) -> Settings:
    api_port = free_port()
    return Settings(
        data_dir=tmp_path, database_url=database_url, temporal_address=dev_server.address,
        task_queue=f"e2e-{uuid.uuid4().hex[:8]}", api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}", secret_keys=Fernet.generate_key().decode(),
        link_secret=uuid.uuid4().hex, smtp_port=mail.port, admin_token="e2e-admin",
        worker_warm_up=False)  # most tests never embed; those that do load the model on first use


@pytest.fixture
def api(e2e_settings: Settings) -> Iterator[str]:
    """The real API over HTTP (approval links are followed like a browser would)."""
    with ThreadedServer(create_app(e2e_settings), port=e2e_settings.api_port) as server:
        yield server.url


@pytest.fixture
def tenant(e2e_settings: Settings, shop) -> dict:
    """A tenant wired to the demo shop: base URL override, allowed host, secrets."""
    return make_tenant(e2e_settings, shop[0])


@pytest.fixture
def worker_process(e2e_settings: Settings, tmp_path) -> Iterator:
    """Starts worker processes on the test's task queue; all are killed at the end."""
    procs: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        procs.append(WorkerProcess(e2e_settings, tmp_path / f"worker-{len(procs)}.log").start())
        return procs[-1]

    yield start
    for p in procs:
        p.kill()


@pytest.fixture
def worker(worker_process) -> WorkerProcess:
    return worker_process()
