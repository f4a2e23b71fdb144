"""Runs survive what production throws at them: a worker killed with SIGKILL while a run waits
for approval and right after a refund request was sent, the Temporal server restarted while a run
waits. Exactly one refund is recorded at the shop each time."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from demo.shop import Failure
from runtime.devserver import DevServer, free_port
from runtime.mailcatcher import text_body
from tests_e2e_helpers import approval_links, publish, start_run, wait_status

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = (ROOT / "examples" / "refund-original.json").read_text()

QUICK_REFUND = """
procedure: quick-refund
inputs: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: find
    type: lookup
    connector: shopify
    operation: orders.get
    params: {email: "{{ inputs.email }}"}
    save_as: order
  - id: refund
    type: action
    connector: shopify
    operation: refunds.create
    params: {order_id: "{{ order.id }}", note: "requested by {{ inputs.email }}"}
    timeout: 4s
    retry: {max_attempts: 5, initial_interval: 200ms, backoff: 1.0, max_interval: 1s}
    save_as: refund
  - id: confirm
    type: message
    text: "Refund {{ refund.refund_id }} for order {{ order.id }} is on its way."
"""


def click(link: str) -> httpx.Response:
    import re
    with httpx.Client(timeout=20) as browser:
        page = browser.get(link)
        assert page.status_code == 200, page.text
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        return browser.post(link, data={"csrf": csrf})


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_killed_while_waiting_for_approval(api, tenant, worker_process, mail, shop):
    headers, (_, shop_state) = tenant["headers"], shop
    first = worker_process()
    publish(api, headers, ORIGINAL, "application/json")
    run = start_run(api, headers, "refund", {"email": "alice@example.com"})
    wait_status(api, headers, run["run_id"], "waiting")
    links = approval_links(text_body(mail.wait_for(lambda m: m["To"] == "manager@company.com")[0]))

    first.kill()
    worker_process()  # a new worker picks the run up from its history
    assert click(links["approve"]).status_code == 200
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert final["messages"] == ["Your refund of $150.00 has been processed."]
    assert len(shop_state.stats()["refunds"]) == 1


def test_worker_killed_right_after_refund_request_was_sent(api, tenant, worker_process, shop):
    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, QUICK_REFUND, "application/yaml")
    # The shop holds the first refund request for 2.5 s before it records the refund and answers.
    shop_state.fail("refunds", Failure(status=None, delay_s=2.5, count=1))
    first = worker_process()
    run = start_run(api, headers, "quick-refund", {"email": "bob@example.com"})
    wait_for(lambda: shop_state.stats()["requests"].get("refunds") == 1, what="the refund request")
    first.kill()  # the request is in flight; its answer will never reach this worker

    worker_process()
    final = wait_status(api, headers, run["run_id"], "succeeded", timeout=90)
    stats = shop_state.stats()
    assert len(stats["refunds"]) == 1, stats["refunds"]
    key = f"{tenant['id']}:{run['run_id']}:refund"
    assert stats["refunds"][0]["idempotency_key"] == key
    assert stats["idempotency"][key] == 2  # the retry was answered from the stored refund
    refund_step = [s for s in final["steps"] if s["id"] == "refund"][0]
    assert refund_step["attempts"] == 2
    assert final["messages"] == [f"Refund {stats['refunds'][0]['id']} for order 1002 is on its way."]


def test_retries_are_counted_at_the_server(api, tenant, worker, shop):
    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, QUICK_REFUND, "application/yaml")
    shop_state.fail("refunds", Failure(status=503, count=2))
    run = start_run(api, headers, "quick-refund", {"email": "bob@example.com"})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    stats = shop_state.stats()
    assert stats["requests"]["refunds"] == 3 and len(stats["refunds"]) == 1
    assert [s["attempts"] for s in final["steps"] if s["id"] == "refund"] == [3]


def test_client_errors_are_not_retried(api, tenant, worker, shop):
    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, QUICK_REFUND, "application/yaml")
    shop_state.fail("refunds", Failure(status=422, count=5))
    run = start_run(api, headers, "quick-refund", {"email": "bob@example.com"})
    final = wait_status(api, headers, run["run_id"], "failed")
    assert final["error"]["name"] == "http_4xx" and final["error"]["step"] == "refund"
    assert shop_state.stats()["requests"]["refunds"] == 1


def test_secrets_never_reach_workflow_history(api, tenant, worker, shop, e2e_settings):
    headers = tenant["headers"]
    publish(api, headers, QUICK_REFUND, "application/yaml")
    run = start_run(api, headers, "quick-refund", {"email": "bob@example.com"})
    final = wait_status(api, headers, run["run_id"], "succeeded")

    async def history() -> bytes:
        client = await Client.connect(e2e_settings.temporal_address)
        history = await client.get_workflow_handle(final["workflow_id"]).fetch_history()
        return b"".join(e.SerializeToString() for e in history.events)  # payloads as stored

    raw = asyncio.run(history())
    assert b"refunds.create" in raw and b"bob@example.com" in raw  # the real history, readable
    assert b"shpat_demo" not in raw


@pytest.fixture
def own_server(tmp_path):
    """A dev server of this test's own, to stop and restart on the same db file and port."""
    server = DevServer(db_file=tmp_path / "restart.db", port=free_port(), log_file=tmp_path / "restart.log")
    yield server.start()
    server.stop()


def test_server_restarted_while_a_run_waits(own_server, database_url, tmp_path, mail, shop, worker_process,
                                            e2e_settings):
    settings = e2e_settings.model_copy(update={"temporal_address": own_server.address})
    from demo.server import ThreadedServer
    from api.app import create_app
    from tests_e2e_helpers import WorkerProcess, make_tenant

    ten = make_tenant(settings, shop[0])
    with ThreadedServer(create_app(settings), port=settings.api_port) as api_server:
        api, headers = api_server.url, ten["headers"]
        worker = WorkerProcess(settings, tmp_path / "w.log").start()
        try:
            publish(api, headers, ORIGINAL, "application/json")
            run = start_run(api, headers, "refund", {"email": "alice@example.com"})
            wait_status(api, headers, run["run_id"], "waiting")
            links = approval_links(text_body(mail.wait_for(lambda m: m["To"] == "manager@company.com")[0]))

            own_server.stop()
            own_server.start()
            assert click(links["approve"]).status_code == 200
            final = wait_status(api, headers, run["run_id"], "succeeded", timeout=90)
            assert final["messages"] == ["Your refund of $150.00 has been processed."]
            assert len(shop[1].stats()["refunds"]) == 1
        finally:
            worker.kill()


def test_sigterm_lets_an_in_flight_call_finish_and_its_result_land(api, tenant, worker_process, shop):
    """A graceful stop (SIGTERM) waits for the running activity: the slow refund answer reaches
    the run, so nothing is sent twice and the step took one attempt."""
    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, QUICK_REFUND, "application/yaml")
    shop_state.fail("refunds", Failure(status=None, delay_s=3.0, count=1))  # answers after 3 s
    first = worker_process()
    first.wait_ready()
    run = start_run(api, headers, "quick-refund", {"email": "bob@example.com"})
    wait_for(lambda: shop_state.stats()["requests"].get("refunds") == 1, what="the refund request")
    asked = time.monotonic()
    assert first.stop() == 0  # SIGTERM: exits by itself once the activity has finished
    assert time.monotonic() - asked >= 1.0  # it waited for the shop's answer instead of dropping it
    assert len(shop_state.stats()["refunds"]) == 1

    worker_process()  # the rest of the run (the confirmation message) on another worker
    final = wait_status(api, headers, run["run_id"], "succeeded", timeout=60)
    refund_step = [s for s in final["steps"] if s["id"] == "refund"][0]
    assert refund_step["attempts"] == 1 and refund_step["status"] == "succeeded"
    stats = shop_state.stats()
    key = f"{tenant['id']}:{run['run_id']}:refund"
    assert stats["requests"]["refunds"] == 1 and stats["idempotency"][key] == 1
    assert final["messages"] == [f"Refund {stats['refunds'][0]['id']} for order 1002 is on its way."]
