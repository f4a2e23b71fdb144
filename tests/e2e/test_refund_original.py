"""The original-design refund procedure (spec §6), end to end through the API, with the
approval decided by following the e-mailed link over HTTP (spec §3 approval)."""
from __future__ import annotations

import re
from pathlib import Path

import httpx

from runtime.mailcatcher import text_body
from tests_e2e_helpers import approval_links, publish, start_run, wait_status

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "refund-original.json"


def test_refund_over_100_needs_approval_by_email_link(api, tenant, worker, mail, shop):
    headers = tenant["headers"]
    _, shop_state = shop
    published = publish(api, headers, EXAMPLE.read_text(), "application/json")
    assert published["procedure_id"] == "refund"

    run = start_run(api, headers, "refund", {"email": "alice@example.com"})
    state = wait_status(api, headers, run["run_id"], "waiting")
    assert state["current_step"] == "step3_approval"
    assert state["pending"][0]["approvers"] == ["manager@company.com"]

    msg = mail.wait_for(lambda m: m["To"] == "manager@company.com")[0]
    body = text_body(msg)
    links = approval_links(body)
    # the approver sees what is approved: the order and its total, the customer's input
    assert "  order.total: 150.00\n" in body and "  order.id: 1001\n" in body, body
    assert "  inputs.email: alice@example.com\n" in body, body
    with httpx.Client(timeout=15) as browser:
        page = browser.get(links["approve"])  # what a mail scanner would also fetch
        assert page.status_code == 200 and "Confirm: Approve" in page.text
        assert "Refund over $100 requires approval" in page.text
        assert "<dt>order.total</dt><dd>150.00</dd>" in page.text, page.text
        assert "<dt>order.id</dt><dd>1001</dd>" in page.text
        assert "<dt>inputs.email</dt><dd>alice@example.com</dd>" in page.text
        assert wait_status(api, headers, run["run_id"], "waiting")["status"] == "waiting"

        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        assert browser.post(links["approve"], data={"csrf": "forged"}).status_code == 403
        done = browser.post(links["approve"], data={"csrf": csrf, "comment": "ok"})
        assert done.status_code == 200 and "You approved" in done.text

        final = wait_status(api, headers, run["run_id"], "succeeded")
        assert final["messages"] == ["Your refund of $150.00 has been processed."]
        approval = [s for s in final["steps"] if s["id"] == "step3_approval"][0]
        assert approval["output"]["outcome"] == "approved"
        assert approval["output"]["by"] == "manager@company.com"

        # The link is single-use; the other link of the same approver is dead too; tampering is 403.
        assert browser.get(links["approve"]).status_code == 410
        assert browser.post(links["approve"], data={"csrf": csrf}).status_code == 410
        assert browser.get(links["reject"]).status_code == 410
        tampered = links["approve"][:-6] + ("AAAAAA" if not links["approve"].endswith("AAAAAA") else "BBBBBB")
        assert browser.get(tampered).status_code == 403

    refunds = shop_state.stats()["refunds"]
    assert len(refunds) == 1 and str(refunds[0]["order_id"]) == "1001"


def test_refund_under_100_skips_approval(api, tenant, worker, mail, shop):
    headers = tenant["headers"]
    publish(api, headers, EXAMPLE.read_text(), "application/json")
    run = start_run(api, headers, "refund", {"email": "bob@example.com"})
    final = wait_status(api, headers, run["run_id"], "succeeded")
    assert [s["id"] for s in final["steps"]] == ["user_context", "step1", "step2", "step4_execute", "step5_confirm"]
    assert final["messages"] == ["Your refund of $40.00 has been processed."]
    assert mail.messages == []
