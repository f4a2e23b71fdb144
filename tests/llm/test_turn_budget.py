"""A remote embedder (`openai_embedding_model`) spends the turn's LLM budget: `decide_turn` on a
real database, procedures and knowledge index (embedded Chroma), against a real loopback
OpenAI-compatible server that embeds, then hangs. Past the budget, intent matching falls back to
the local model and a search that could not finish hands off; the turn never waits for the
embedding client's own timeouts and retries."""
from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet

from activities.conversation import ConversationActivities
from activities.services import Services
from db.engine import session_scope
from db.procedures import publish
from db.tenants import create_tenant
from knowledge.chunk import chunk_text
from knowledge.embed import get_embedder
from knowledge.index import KnowledgeIndex
from procedures.loader import definition_sha256, load_procedure
from settings import Settings


TRACK_SOURCE = """
procedure: track-order
trigger:
  intents: [where is my parcel]
steps:
  - id: tell
    type: message
    text: Let me look up your parcel.
"""
REFUNDS = ("## How long refunds take\nRefunds reach your card within 5 business days after we receive "
           "the return. Store credit is instant.")
BUDGET_S = 3.0
SLACK_S = 3.0  # the offline work after the budget, on a loaded machine
API_KEY = "sk-test-budget-5c1e"


@pytest.fixture
def turn(openai_server, fake_openai, database_url, tmp_path):
    _, server = openai_server
    settings = Settings(data_dir=tmp_path, database_url=database_url, openai_base_url=server.url + "/v1",
                        openai_api_key=API_KEY, openai_model="fake-chat", openai_embedding_model="fake-embed",
                        llm_timeout_s=BUDGET_S, answer_threshold=0.1,  # the fake model's vectors are weak
                        answer_passage_floor=0.1,
                        secret_keys=Fernet.generate_key().decode(), link_secret="s" * 32)
    services = Services.from_settings(settings)
    definition = load_procedure(TRACK_SOURCE)
    with session_scope(services.engine) as session:
        tenant = create_tenant(session, "Acme")[0]
        publish(session, tenant.id, "track-order", TRACK_SOURCE, "yaml", definition, definition_sha256(definition))
    index = KnowledgeIndex(settings, get_embedder(settings))
    index.upsert_article(tenant.id, "refunds", 1, "Refund processing", "https://help.example/refunds",
                         chunk_text("Refund processing", REFUNDS))
    acts = ConversationActivities(services, index=index)
    acts.local_embedder.embed(["warm up"])  # loading the local model is not the LLM's time
    try:
        yield acts, tenant.id, fake_openai
    finally:
        services.engine.dispose()


def decide(acts, tenant_id: str, text: str):
    return acts.decide_turn({"tenant_id": tenant_id, "text": text, "customer": {}, "busy_procedure": False,
                             "turn_s": 60.0, "history": []})


def embedding_requests(behaviour) -> int:
    return len([r for r in behaviour.requests if r["path"] == "/v1/embeddings"])


async def test_remote_embeddings_are_inside_the_turns_llm_budget(turn):
    acts, tenant_id, behaviour = turn
    assert acts.embedder.name == "openai:fake-embed"
    behaviour.reply = "Refunds reach your card within 5 business days [1]."
    answered = await decide(acts, tenant_id, "when will I see the money from my return?")
    assert answered["kind"] == "answer" and "5 business days" in answered["text"]  # remote vectors work

    behaviour.mode = "hang"  # chat and embeddings alike
    started = time.monotonic()
    matched = await decide(acts, tenant_id, "where is my parcel now?")  # not cached
    elapsed = time.monotonic() - started
    # the remote intent match gave up at the budget; the local model matched the intent
    assert matched["kind"] == "procedure" and matched["procedure_id"] == "track-order"
    assert BUDGET_S - 0.5 < elapsed < BUDGET_S + SLACK_S, elapsed

    before = embedding_requests(behaviour)
    started = time.monotonic()
    searched = await decide(acts, tenant_id, "when will I see the money from my return?")
    elapsed = time.monotonic() - started
    # the intent match used the budget up; the index holds remote vectors only: a person answers
    assert searched == {"kind": "handoff", "reason": "the knowledge base could not be searched in time"}
    assert elapsed < BUDGET_S + SLACK_S, elapsed
    assert embedding_requests(behaviour) - before == 1  # nothing was started past the budget
