"""The runs API end to end (spec §8): start (validated, idempotent per client run_id), read
(status, step log, redacted vars), tenant isolation, list with filters, cancel, answering an
`ask` step, version pinning across a publish, and garbage bodies never giving a 500."""
from __future__ import annotations

import re
import time

import httpx

from runtime.mailcatcher import text_body
from tests_e2e_helpers import approval_links, get_run, publish, start_run, wait_status

BASIC = """
procedure: api-basic
inputs:
  type: object
  required: [email]
  properties:
    email: {type: string}
    count: {type: integer, minimum: 1}
steps:
  - id: remember
    type: set
    set: {api_token: "tok-{{ inputs.email }}", note: "for {{ inputs.email }}"}
  - id: greet
    type: message
    text: "Hello {{ inputs.email }}"
"""

WAIT = """
procedure: api-wait
steps:
  - id: hold
    type: approval
    approvers: [boss@example.com]
    message: Please approve
    timeout: 48h
  - id: done
    type: message
    text: approved
"""

QUICK = """
procedure: api-quick
steps:
  - id: only
    type: message
    text: quick
"""

ASK = """
procedure: api-ask
steps:
  - id: code
    type: ask
    text: What is your code?
    pattern: "[A-Z]{2}-[0-9]{4}"
    max_attempts: 3
    timeout: 1h
    save_as: code
  - id: thanks
    type: message
    text: "Thanks, {{ code }}"
"""

PINNED = """
procedure: api-pinned
steps:
  - id: gate
    type: approval
    approvers: [chief@example.com]
    message: Pinned version check
    timeout: 48h
  - id: say
    type: message
    text: "{text}"
"""


def _post(api: str, path: str, headers: dict, **kw) -> httpx.Response:
    return httpx.post(f"{api}{path}", headers=headers, timeout=15, **kw)


def _list(api: str, headers: dict, **params) -> httpx.Response:
    return httpx.get(f"{api}/v1/runs", headers=headers, params=params, timeout=15)


def _listed(api: str, headers: dict, expect: set[str], timeout: float = 10, **params) -> set[str]:
    """Poll the (eventually consistent) list until exactly `expect` run ids are shown."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        r = _list(api, headers, **params)
        assert r.status_code == 200, r.text
        seen = {run["run_id"] for run in r.json()["runs"]}
        if seen == expect:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"list {params} shows {seen}, expected {expect}")


def _other_tenant(api: str) -> dict:
    r = httpx.post(f"{api}/v1/tenants", json={"name": "other"}, headers={"X-Admin-Token": "e2e-admin"}, timeout=15)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


def test_start_validate_idempotent_read_and_isolation(api, tenant, worker):
    headers, tid = tenant["headers"], tenant["id"]
    published = publish(api, headers, BASIC, "application/yaml")
    assert published["version"] == 1

    # invalid inputs: 422 with the JSON Schema messages, and no run recorded under that id
    bad = _post(api, "/v1/procedures/api-basic/runs", headers,
                json={"inputs": {"count": 0}, "run_id": "bad-input-run"})
    assert bad.status_code == 422, bad.text
    assert "'email' is a required property" in bad.json()["message"]
    assert "count: 0 is less than the minimum of 1" in bad.json()["message"]
    assert get_run(api, headers, "bad-input-run").status_code == 404

    missing = _post(api, "/v1/procedures/no-such-proc/runs", headers, json={"inputs": {}})
    assert missing.status_code == 404, missing.text

    first = start_run(api, headers, "api-basic", {"email": "ann@example.com"}, run_id="client-run-1")
    assert first["run_id"] == "client-run-1"
    assert first["workflow_id"] == f"procedure-run/{tid}/api-basic/client-run-1"
    assert first["version"] == 1 and first["sha256"] == published["sha256"]
    assert first["created"] is True

    again = start_run(api, headers, "api-basic", {"email": "zed@example.com"}, run_id="client-run-1")
    assert again["created"] is False
    assert again["workflow_id"] == first["workflow_id"] and again["sha256"] == first["sha256"]

    final = wait_status(api, headers, "client-run-1", "succeeded")
    assert final["current_step"] is None
    assert final["messages"] == ["Hello ann@example.com"]  # the second start ran nothing
    assert final["vars"]["inputs"] == {"email": "ann@example.com"}
    assert final["vars"]["api_token"] == "[redacted]"
    assert final["vars"]["note"] == "for ann@example.com"
    assert "tok-ann@example.com" not in str(final)
    assert [s["id"] for s in final["steps"]] == ["remember", "greet"]
    for step in final["steps"]:
        assert {"id", "status", "attempts", "started_at", "ended_at", "error"} <= set(step)
        assert step["status"] == "succeeded" and step["error"] is None
        assert step["started_at"] and step["ended_at"] and step["ended_at"] >= step["started_at"]
    assert [s["attempts"] for s in final["steps"]][1] == 1

    # exactly one workflow for that run id
    assert _listed(api, headers, {"client-run-1"}, procedure="api-basic") == {"client-run-1"}

    # another tenant sees none of it
    other = _other_tenant(api)
    assert get_run(api, other, "client-run-1").status_code == 404
    assert _post(api, "/v1/runs/client-run-1/cancel", other).status_code == 404
    assert _post(api, "/v1/runs/client-run-1/answer", other, json={"text": "x"}).status_code == 404
    assert _post(api, "/v1/procedures/api-basic/runs", other, json={"inputs": {"email": "a@b.c"}}).status_code == 404
    assert _list(api, other).json()["runs"] == []


def test_list_filters_and_cancel_waiting_run(api, tenant, worker):
    headers = tenant["headers"]
    publish(api, headers, WAIT, "application/yaml")
    publish(api, headers, QUICK, "application/yaml")
    waiting = start_run(api, headers, "api-wait", {}, run_id="wait-1")
    quick = start_run(api, headers, "api-quick", {}, run_id="quick-1")
    state = wait_status(api, headers, waiting["run_id"], "waiting")
    assert state["current_step"] == "hold"
    assert state["pending"][0]["approvers"] == ["boss@example.com"]
    wait_status(api, headers, quick["run_id"], "succeeded")

    assert _listed(api, headers, {"wait-1"}, procedure="api-wait")
    assert _listed(api, headers, {"wait-1"}, status="waiting")
    assert _listed(api, headers, {"quick-1"}, status="succeeded")
    assert _listed(api, headers, {"wait-1", "quick-1"})
    listed = {r["run_id"]: r for r in _list(api, headers).json()["runs"]}
    assert listed["wait-1"]["procedure_id"] == "api-wait" and listed["wait-1"]["current_step"] == "hold"
    assert listed["quick-1"]["status"] == "succeeded" and listed["quick-1"]["closed_at"]

    bad = _list(api, headers, status="sleeping")
    assert bad.status_code == 422 and "status must be one of" in bad.json()["message"]
    assert _list(api, headers, procedure='x" OR TenantId != "').status_code == 422

    cancelled = _post(api, "/v1/runs/wait-1/cancel", headers)
    assert cancelled.status_code == 202 and cancelled.json() == {"run_id": "wait-1", "cancel_requested": True}
    final = wait_status(api, headers, "wait-1", "cancelled", timeout=30)
    assert final["messages"] == []
    assert _listed(api, headers, {"wait-1"}, status="cancelled")
    assert _listed(api, headers, set(), status="waiting") == set()


def test_answer_ask_step(api, tenant, worker):
    headers = tenant["headers"]
    publish(api, headers, ASK, "application/yaml")
    run = start_run(api, headers, "api-ask", {}, run_id="ask-1")
    state = wait_status(api, headers, "ask-1", "waiting")
    assert state["current_step"] == "code" and state["pending"][0]["kind"] == "ask"

    wrong = _post(api, "/v1/runs/ask-1/answer", headers, json={"text": "hello"})
    assert wrong.status_code == 200, wrong.text
    assert wrong.json()["accepted"] is False and wrong.json()["step_id"] == "code"
    state = wait_status(api, headers, "ask-1", "waiting")
    deadline = time.monotonic() + 10
    while len(state["messages"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        state = wait_status(api, headers, "ask-1", "waiting")
    assert state["messages"] == ["What is your code?", "Sorry, that does not look right. What is your code?"]
    assert state["pending"][0]["attempt"] == 2

    right = _post(api, "/v1/runs/ask-1/answer", headers, json={"text": " AB-1234 ", "step_id": "code"})
    assert right.status_code == 200 and right.json()["accepted"] is True, right.text
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert final["vars"]["code"] == "AB-1234"
    assert final["messages"][-1] == "Thanks, AB-1234"
    assert [s for s in final["steps"] if s["id"] == "code"][0]["attempts"] == 2

    # nothing is asked any more: 409, not a 500 or a silent accept
    late = _post(api, "/v1/runs/ask-1/answer", headers, json={"text": "AB-1234"})
    assert late.status_code == 409, late.text

    # a run waiting on an approval is not asking anything either
    publish(api, headers, WAIT, "application/yaml")
    start_run(api, headers, "api-wait", {}, run_id="wait-ask")
    wait_status(api, headers, "wait-ask", "waiting")
    not_asked = _post(api, "/v1/runs/wait-ask/answer", headers, json={"text": "yes"})
    assert not_asked.status_code == 409 and "no question is waiting" in not_asked.json()["message"]
    _post(api, "/v1/runs/wait-ask/cancel", headers)


def test_run_pinned_to_version_1_after_v2_is_published(api, tenant, worker, mail):
    headers = tenant["headers"]
    v1 = publish(api, headers, PINNED.replace("{text}", "v1 text sent"), "application/yaml")
    run = start_run(api, headers, "api-pinned", {}, run_id="pinned-1")
    assert run["version"] == 1
    wait_status(api, headers, "pinned-1", "waiting")
    v2 = publish(api, headers, PINNED.replace("{text}", "v2 text sent"), "application/yaml")
    assert (v1["version"], v2["version"]) == (1, 2) and v1["sha256"] != v2["sha256"]

    msg = mail.wait_for(lambda m: m["To"] == "chief@example.com")[0]
    link = approval_links(text_body(msg))["approve"]
    with httpx.Client(timeout=15) as browser:
        page = browser.get(link)
        assert page.status_code == 200 and "Pinned version check" in page.text
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        assert browser.post(link, data={"csrf": csrf}).status_code == 200

    final = wait_status(api, headers, "pinned-1", "succeeded")
    assert final["messages"] == ["v1 text sent"]
    assert final["version"] == 1 and final["sha256"] == v1["sha256"]
    assert final["vars"]["run"]["version"] == 1

    newer = start_run(api, headers, "api-pinned", {})
    assert newer["version"] == 2 and newer["sha256"] == v2["sha256"]
    _post(api, f"/v1/runs/{newer['run_id']}/cancel", headers)


def test_garbage_bodies_never_give_500(api, tenant):
    headers = {**tenant["headers"], "Content-Type": "application/json"}
    publish(api, tenant["headers"], QUICK, "application/yaml")
    bodies = [b"", b"{", b"null", b"[]", b"42", b'"x"', b"\xff\xfe\x00", b'{"inputs": "x"}',
              b'{"inputs": [1]}', b'{"inputs": {}, "version": 0}', b'{"inputs": {}, "version": "two"}',
              b'{"inputs": {}, "version": 99}', b'{"inputs": {}, "run_id": "../../etc"}',
              b'{"inputs": {}, "run_id": ""}', b'{"inputs": {}, "run_id": 7}', b'{"inputs": {}, "run_id": "' + b"a" * 200 + b'"}',
              b'{"inputs": {}, "conversation": "c"}', b'{"inputs": {}, "extra": 1}',
              b'{"inputs": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"]
    for body in bodies:
        r = httpx.post(f"{api}/v1/procedures/api-quick/runs", content=body, headers=headers, timeout=15)
        assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text)
        assert "error" in r.json(), r.text
    for body in bodies + [b'{"text": 5}', b'{"text": "x", "step_id": ["a"]}', b'{"text": "' + b"x" * 20000 + b'"}']:
        r = httpx.post(f"{api}/v1/runs/nope/answer", content=body, headers=headers, timeout=15)
        assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text)
    # a lone surrogate is valid JSON but not storable everywhere (PostgreSQL jsonb): never a 500
    r = httpx.post(f"{api}/v1/procedures/api-quick/runs", content=b'{"inputs": {"k\\ud800": "\\udfff"}}',
                   headers=headers, timeout=15)
    assert r.status_code < 500, r.text
    # NUL: PostgreSQL text and jsonb refuse it; the same 422 on both databases, nothing recorded
    for i, body in enumerate((b'{"inputs": {"k": "a\\u0000b"}, "run_id": "nul-0"}',
                              b'{"inputs": {"k\\u0000": 1}, "run_id": "nul-1"}',
                              b'{"inputs": {"k": ["x", {"y": "\\u0000"}]}, "run_id": "nul-2"}')):
        r = httpx.post(f"{api}/v1/procedures/api-quick/runs", content=body, headers=headers, timeout=15)
        assert r.status_code == 422 and "NUL" in r.json()["message"], (body, r.text)
        assert get_run(api, tenant["headers"], f"nul-{i}").status_code == 404
    # numbers beyond any version, a conversation a run started here cannot claim
    for body in (b'{"inputs": {}, "version": 99999999999999999999}', b'{"inputs": {}, "version": 2147483648}',
                 b'{"inputs": {}, "conversation": {"workflow_id": "conversation/acme/x"}}',
                 b'{"inputs": {}, "conversation": {"channel": "Web Chat"}}',
                 b'{"inputs": {}, "conversation": {"channel": "' + b"a" * 40 + b'"}}',
                 b'{"inputs": {}, "conversation": {"channel": 7}}',
                 b'{"inputs": {}, "conversation": {"customer": {"email": "a@b.c\\nBcc: x"}}}',
                 b'{"inputs": {}, "conversation": {"customer": "ann"}}',
                 b'{"inputs": {}, "conversation": {"other": 1}}'):
        r = httpx.post(f"{api}/v1/procedures/api-quick/runs", content=body, headers=headers, timeout=15)
        assert r.status_code == 422, (body, r.status_code, r.text)
    r = httpx.post(f"{api}/v1/procedures/api-quick/runs", headers=headers, timeout=15,
                   json={"inputs": {}, "run_id": "claims-conv", "conversation": {"workflow_id": "conversation/x"}})
    assert "workflow_id" in str(r.json()["details"]) and get_run(api, tenant["headers"], "claims-conv").status_code == 404
    for body in (b'{"inputs": {}, "run_id": "abc\\n"}', b'{"inputs": {}, "run_id": "a\\u0000b"}'):
        r = httpx.post(f"{api}/v1/procedures/api-quick/runs", content=body, headers=headers, timeout=15)
        assert r.status_code == 422 and "run_id" in r.json()["message"], (body, r.text)
    r = httpx.post(f"{api}/v1/procedures/a%00b/runs", json={"inputs": {}}, headers=headers, timeout=15)
    assert r.status_code == 404, r.text
    for path in ("/v1/runs/a%00b", "/v1/runs/abc%0A"):
        r = httpx.get(f"{api}{path}", headers=headers, timeout=15)
        assert r.status_code == 404, (path, r.status_code, r.text)
    for path in ("/v1/runs/nope/cancel", "/v1/runs/%2e%2e", "/v1/runs/a%00b/cancel", "/v1/runs/a%00b/answer"):
        r = httpx.post(f"{api}{path}", content=b"{", headers=headers, timeout=15)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    for params in ({"limit": "0"}, {"limit": "x"}, {"procedure": "a" * 500}, {"status": ""}):
        r = _list(api, tenant["headers"], **params)
        assert 400 <= r.status_code < 500, (params, r.status_code, r.text)


CONTEXT = """
procedure: api-context
steps:
  - id: greet
    type: message
    text: "Hello {{ conversation.customer.name }} on {{ conversation.channel }}"
"""


def test_conversation_context_reaches_the_run_and_the_channel_attribute(api, tenant, worker, e2e_settings):
    import asyncio

    from temporalio.client import Client

    headers = tenant["headers"]
    publish(api, headers, CONTEXT, "application/yaml")
    start_run(api, headers, "api-context", {}, run_id="ctx-1",
              conversation={"id": "ticket-42", "channel": "web", "customer": {"name": "Ann", "email": "ann@example.com"}})
    final = wait_status(api, headers, "ctx-1", "succeeded")
    assert final["messages"] == ["Hello Ann on web"]
    assert final["vars"]["conversation"] == {"id": "ticket-42", "channel": "web",
                                             "customer": {"name": "Ann", "email": "ann@example.com"}}
    start_run(api, headers, "api-context", {}, run_id="ctx-2")
    assert wait_status(api, headers, "ctx-2", "succeeded")["vars"]["conversation"] == {}

    async def channels() -> list:
        client = await Client.connect(e2e_settings.temporal_address)
        out = []
        for run_id in ("ctx-1", "ctx-2"):
            desc = await client.get_workflow_handle(final["workflow_id"].replace("ctx-1", run_id)).describe()
            out.append([p.value for p in desc.typed_search_attributes if p.key.name == "Channel"])
        return out

    assert asyncio.run(channels()) == [["web"], ["api"]]


CALLEE = """
procedure: api-callee
steps:
  - id: say
    type: message
    text: "callee {text}"
"""

CALLER = """
procedure: api-caller
steps:
  - id: gate
    type: approval
    approvers: [chief@example.com]
    message: "Go on?"
    timeout: 1h
  - id: unversioned
    type: call
    procedure: api-callee
    save_as: first
  - id: explicit
    type: call
    procedure: api-callee
    version: 2
    save_as: second
"""


def _approve(mail, run_id: str) -> None:
    msg = mail.wait_for(lambda m: m["To"] == "chief@example.com" and m["X-Flywheel-Run"] == run_id)[0]
    link = approval_links(text_body(msg))["approve"]
    with httpx.Client(timeout=15) as browser:
        page = browser.get(link)
        assert page.status_code == 200, page.text
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        assert browser.post(link, data={"csrf": csrf}).status_code == 200


def test_calls_are_pinned_when_the_run_starts(api, tenant, worker, mail):
    """spec §8: publishing a callee while a run waits does not change the version its unversioned
    `call` runs; an explicit `version` runs that version; a run started later gets the newer one."""
    headers = tenant["headers"]
    assert publish(api, headers, CALLEE.replace("{text}", "v1"), "application/yaml")["version"] == 1
    publish(api, headers, CALLER, "application/yaml")
    start_run(api, headers, "api-caller", {}, run_id="pin-1")
    wait_status(api, headers, "pin-1", "waiting")
    assert publish(api, headers, CALLEE.replace("{text}", "v2"), "application/yaml")["version"] == 2
    _approve(mail, "pin-1")
    final = wait_status(api, headers, "pin-1", "succeeded")
    assert final["messages"] == ["callee v1", "callee v2"]
    assert final["vars"]["first"]["status"] == "succeeded"
    assert final["vars"]["first"]["vars"]["run"]["version"] == 1
    assert final["vars"]["second"]["vars"]["run"]["version"] == 2

    start_run(api, headers, "api-caller", {}, run_id="pin-2")  # started after v2: v2
    wait_status(api, headers, "pin-2", "waiting")
    assert publish(api, headers, CALLEE.replace("{text}", "v3"), "application/yaml")["version"] == 3
    _approve(mail, "pin-2")
    final = wait_status(api, headers, "pin-2", "succeeded")
    assert final["messages"] == ["callee v2", "callee v2"]


TOUR = """
procedure: tour-live
inputs:
  type: object
  required: [email, order_ids]
  properties:
    email: {type: string}
    order_ids: {type: array}
steps:
  - id: remember
    type: set
    set: {session_token: "tok-{{ inputs.email }}"}
  - id: both
    type: parallel
    branches:
      shop:
        - id: find
          type: lookup
          connector: shopify
          operation: orders.get
          params: {email: "{{ inputs.email }}"}
          save_as: order
      pause:
        - id: nap
          type: wait
          for: 1s
  - id: each
    type: for_each
    items: inputs.order_ids
    as: oid
    max_items: 5
    max_concurrency: 2
    steps:
      - id: fetch
        type: lookup
        connector: shopify
        operation: orders.get_by_id
        params: {order_id: "{{ oid }}"}
        save_as: found
      - id: approve
        type: approval
        approvers: [boss@example.com]
        message: "Refund order {{ found.id }}?"
        timeout: 1h
        save_as: decision
    save_as: checked
  - id: extra
    type: ask
    text: Any other order number?
    timeout: 2s
    on_timeout: sub
  - id: sub
    type: call
    procedure: tour-live-child
    inputs: {total: "{{ order.total }}"}
    on_error:
      - {errors: [any], goto: human}
  - id: unreached
    type: message
    text: the child did not fail
  - id: human
    type: handoff
    reason: "refund of {{ order.total }} refused after {{ len(checked) }} approvals"
    team: billing
"""

TOUR_CHILD = """
procedure: tour-live-child
inputs: {type: object, required: [total], properties: {total: {type: string}}}
steps:
  - id: refuse
    type: fail
    error: refund_refused
    message: "{{ inputs.total }} is too much"
"""


def test_structural_steps_and_queries_on_the_dev_server(api, tenant, worker, mail, shop, e2e_settings):
    """parallel, wait, for_each (two approvals waiting at once, decided by their links), ask timing
    out, call of a procedure that fails, handoff: on the real server against the loopback shop.
    While it waits, the `status`, `current_step`, `variables` and `step_log` queries answer."""
    import asyncio

    from temporalio.client import Client

    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, TOUR_CHILD, "application/yaml")
    publish(api, headers, TOUR, "application/yaml")
    run = start_run(api, headers, "tour-live", {"email": "alice@example.com", "order_ids": [1001, 1002]},
                    run_id="tour-1")
    mails = mail.wait_for(lambda m: m["To"] == "boss@example.com", count=2)
    bodies = {m["X-Flywheel-Step"]: text_body(m) for m in mails}
    assert set(bodies) == {"each[0]/approve", "each[1]/approve"}
    assert "Refund order 1001?" in bodies["each[0]/approve"] and "  oid: 1001\n" in bodies["each[0]/approve"]
    assert "Refund order 1002?" in bodies["each[1]/approve"] and "  found.total: 40.00\n" in bodies["each[1]/approve"]
    assert "session_token" in bodies["each[0]/approve"] and "tok-alice" not in bodies["each[0]/approve"]

    async def queries() -> dict:
        client = await Client.connect(e2e_settings.temporal_address)
        handle = client.get_workflow_handle(run["workflow_id"])
        return {name: await handle.query(name) for name in ("status", "current_step", "variables", "step_log")}

    state = wait_status(api, headers, "tour-1", "waiting")
    q = asyncio.run(queries())
    assert q["status"] == "waiting" and q["current_step"] == "approve"
    assert q["variables"]["session_token"] == "[redacted]" and "tok-alice" not in str(q)
    assert q["variables"]["order"]["total"] == "150.00" and q["variables"]["inputs"]["order_ids"] == [1001, 1002]
    log = {(s["path"], s["id"]): s for s in q["step_log"]}
    assert log[("", "both")]["status"] == "succeeded" and log[("both.pause/", "nap")]["status"] == "succeeded"
    assert log[("each[0]/", "fetch")]["output"]["total"] == "150.00"
    assert log[("each[0]/", "approve")]["status"] == "running" == log[("each[1]/", "approve")]["status"]
    assert all(s["started_at"] and s["attempts"] >= 0 for s in q["step_log"])
    assert {p["key"] for p in state["pending"]} == {"each[0]/approve", "each[1]/approve"}

    for key in ("each[1]/approve", "each[0]/approve"):
        link = approval_links(bodies[key])["approve"]
        with httpx.Client(timeout=15) as browser:
            page = browser.get(link)
            assert page.status_code == 200, page.text
            assert f"<dt>Step</dt><dd>{key}</dd>" in page.text
            csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
            assert browser.post(link, data={"csrf": csrf}).status_code == 200

    final = wait_status(api, headers, "tour-1", "handed_off", timeout=60)
    assert final["result"] == {"reason": "refund of 150.00 refused after 2 approvals", "team": "billing"}
    assert final["output"] is None
    assert final["messages"] == ["Any other order number?"]
    decisions = [item["decision"] for item in final["vars"]["checked"]]
    assert [(d["outcome"], d["by"]) for d in decisions] == [("approved", "boss@example.com")] * 2
    by_id = {(s["path"], s["id"]): s for s in final["steps"]}
    assert by_id[("", "extra")]["output"] == {"outcome": "timed_out"}
    assert by_id[("", "sub")]["status"] == "caught"
    assert by_id[("", "sub")]["error"]["name"] == "refund_refused"
    assert "150.00 is too much" in by_id[("", "sub")]["error"]["message"]
    assert ("", "unreached") not in by_id and by_id[("", "human")]["status"] == "succeeded"
    assert final["current_step"] is None and final["pending"] == []
    stats = shop_state.stats()["requests"]
    assert stats.get("orders") == 1 and stats.get("order") == 2


RETRIED = """
procedure: api-retried
steps:
  - id: find
    type: lookup
    connector: shopify
    operation: orders.get
    params: {email: alice@example.com}
    retry: {max_attempts: 6, initial_interval: 1s, backoff: 1.0, max_interval: 1s}
    save_as: order
  - id: done
    type: message
    text: "found {{ order.id }}"
"""


def test_a_step_being_retried_is_the_current_step(api, tenant, worker, shop):
    from demo.shop import Failure

    headers, (_, shop_state) = tenant["headers"], shop
    publish(api, headers, RETRIED, "application/yaml")
    shop_state.fail("orders", Failure(status=503, count=4))
    worker.wait_ready()
    start_run(api, headers, "api-retried", {}, run_id="retried-1")
    deadline = time.monotonic() + 60  # a loaded machine: the first attempt and the retry's 1 s
    while shop_state.stats()["requests"].get("orders", 0) < 2:
        assert time.monotonic() < deadline, "the lookup was not retried"
        time.sleep(0.1)
    state = get_run(api, headers, "retried-1").json()
    assert state["status"] == "running" and state["current_step"] == "find", state
    assert [(s["id"], s["status"]) for s in state["steps"]] == [("find", "running")]
    final = wait_status(api, headers, "retried-1", "succeeded", timeout=60)
    assert final["messages"] == ["found 1001"] and final["steps"][0]["attempts"] == 5


TWO_ASKS = """
procedure: api-two-asks
steps:
  - id: each
    type: for_each
    items: '["ann", "ben"]'
    as: name
    max_items: 2
    max_concurrency: 2
    steps:
      - id: code
        type: ask
        text: "Code for {{ name }}?"
        timeout: 1h
        save_as: answer
    save_as: answers
  - id: tell
    type: message
    text: "{{ answers[0].answer }} {{ answers[1].answer }}"
"""


def test_answers_address_one_of_two_waiting_asks_by_path(api, tenant, worker):
    headers = tenant["headers"]
    publish(api, headers, TWO_ASKS, "application/yaml")
    start_run(api, headers, "api-two-asks", {}, run_id="two-asks")
    deadline = time.monotonic() + 30
    while len((state := wait_status(api, headers, "two-asks", "waiting"))["pending"]) < 2:
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert sorted(p["key"] for p in state["pending"]) == ["each[0]/code", "each[1]/code"]
    vague = _post(api, "/v1/runs/two-asks/answer", headers, json={"text": "X", "step_id": "code"})
    assert vague.status_code == 409 and "each[0]/code, each[1]/code" in vague.json()["message"], vague.text
    assert _post(api, "/v1/runs/two-asks/answer", headers, json={"text": "X"}).status_code == 409
    for key, text in (("each[1]/code", "B-2"), ("each[0]/code", "A-1")):
        r = _post(api, "/v1/runs/two-asks/answer", headers, json={"text": text, "step_id": key})
        assert r.status_code == 200 and r.json() == {"step_id": key, "accepted": True, "message": ""}, r.text
    final = wait_status(api, headers, "two-asks", "succeeded")
    assert final["messages"][-1] == "A-1 B-2"


OUTPUT = """
procedure: api-output
inputs: {type: object, required: [n], properties: {n: {type: integer}}}
steps:
  - id: done
    type: succeed
    output: {doubled: "{{ inputs.n * 2 }}", note: "n={{ inputs.n }}"}
"""


def test_succeed_output_is_the_runs_output(api, tenant, worker):
    headers = tenant["headers"]
    publish(api, headers, OUTPUT, "application/yaml")
    start_run(api, headers, "api-output", {"n": 21}, run_id="output-1")
    final = wait_status(api, headers, "output-1", "succeeded")
    assert final["output"] == {"doubled": 42, "note": "n=21"}
