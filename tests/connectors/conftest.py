"""Fixtures: the demo shop on real loopback HTTP, shared by the connector tests."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from connectors.auth import clear_token_cache
from connectors.catalog import builtin_connectors
from demo.server import ThreadedServer
from demo.shop import ShopState, demo_base_urls, demo_secrets, run_shop


@pytest.fixture(scope="session")
def shop_server() -> Iterator[ThreadedServer]:
    with run_shop(0) as server:
        yield server


@pytest.fixture
def shop(shop_server: ThreadedServer) -> ThreadedServer:
    """The running shop, reset before each test."""
    shop_server.app.state.shop.reset()
    clear_token_cache()
    return shop_server


@pytest.fixture
def state(shop: ThreadedServer) -> ShopState:
    return shop.app.state.shop


@pytest.fixture
def secrets(state: ShopState) -> dict[str, str]:
    return demo_secrets(state)


@pytest.fixture
def bases(shop: ThreadedServer) -> dict[str, str]:
    return demo_base_urls(shop.url)


@pytest.fixture(scope="session")
def specs() -> dict[str, dict]:
    return builtin_connectors()


@pytest.fixture
def fail(shop: ThreadedServer):
    """fail(route=..., status=..., count=..., retry_after=..., delay_s=..., body=...) via /_control/fail."""
    def inject(**failure: object) -> None:
        httpx.post(shop.url + "/_control/fail", json=failure).raise_for_status()
    return inject
