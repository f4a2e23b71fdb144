"""A fake OpenAI-compatible server on loopback (demo.openai_server) and settings pointing at it."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.openai_server import OpenAIBehaviour, create_openai_app
from demo.server import ThreadedServer
from settings import Settings

API_KEY = "sk-test-Fly-9f3c2a7b51e04d8c"


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[OpenAIBehaviour, ThreadedServer]]:
    behaviour = OpenAIBehaviour()
    with ThreadedServer(create_openai_app(behaviour)) as server:
        yield behaviour, server


@pytest.fixture
def fake_openai(openai_server) -> OpenAIBehaviour:
    """The server's behaviour, reset for this test (mode "answer", empty request log)."""
    behaviour, _ = openai_server
    behaviour.mode, behaviour.reply, behaviour.delay_s = "answer", None, 5.0
    behaviour.requests.clear()
    return behaviour


@pytest.fixture
def llm_settings(openai_server, fake_openai) -> Settings:
    _, server = openai_server
    return Settings(openai_base_url=server.url + "/v1", openai_api_key=API_KEY, openai_model="fake-chat",
                    llm_timeout_s=3.0)
