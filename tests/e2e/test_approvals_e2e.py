"""Approvals by e-mail with quorum, reminders, escalation tiers and timeouts, on the real server
(short durations stand in for hours)."""
from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser

import httpx

from runtime.mailcatcher import text_body
from tests_e2e_helpers import approval_links, publish, start_run, wait_status

QUORUM = """
procedure: big-refund
inputs: {type: object, properties: {amount: {type: number}, director: {type: string}}}
steps:
  - id: approve
    type: approval
    approvers: [ann@example.com, ben@example.com]
    quorum: 2
    message: "Refund {{ inputs.amount }} USD?"
    timeout: 60s
    reminders: [2s]
    escalate:
      - to: ["{{ inputs.director }}"]
        after: 3s
    save_as: decision
  - id: done
    type: message
    text: "approved by {{ decision.by }}"
"""

TIMEOUT = """
procedure: slow-approval
steps:
  - id: approve
    type: approval
    approvers: [ann@example.com]
    timeout: 3s
    on_timeout: too_late
  - id: done
    type: succeed
  - id: too_late
    type: message
    text: nobody decided in time
"""


def decide(link: str) -> httpx.Response:
    with httpx.Client(timeout=20) as browser:
        page = browser.get(link)
        if page.status_code != 200:
            return page
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        return browser.post(link, data={"csrf": csrf})


def to(addr: str, kind: str = "Approval needed"):
    return lambda m: m["To"] == addr and m["Subject"].startswith(kind)


def test_quorum_reminders_and_escalation(api, tenant, worker, mail):
    headers = tenant["headers"]
    publish(api, headers, QUORUM, "application/yaml")
    run = start_run(api, headers, "big-refund", {"amount": 250, "director": "Cat@Example.com"})
    ann = approval_links(text_body(mail.wait_for(to("ann@example.com"))[0]))
    mail.wait_for(to("ben@example.com"))
    # Reminders go to both undecided approvers; the escalation tier adds cat (its `to` is a
    # template, rendered and compared case-insensitively).
    mail.wait_for(to("ann@example.com", "Reminder"), timeout=20)
    mail.wait_for(to("ben@example.com", "Reminder"), timeout=20)
    cat = approval_links(text_body(mail.wait_for(to("cat@example.com", "Escalated"), timeout=20)[0]))

    assert decide(ann["approve"]).status_code == 200
    state = wait_status(api, headers, run["run_id"], "waiting")
    assert state["pending"][0]["decided"] == ["ann@example.com"]  # one approval is not a quorum of 2
    assert decide(ann["reject"]).status_code == 410  # ann already decided

    assert decide(cat["approve"]).status_code == 200
    final = wait_status(api, headers, run["run_id"], "succeeded")
    decision = final["vars"]["decision"]
    assert decision["outcome"] == "approved" and decision["by"] == "cat@example.com"
    assert sorted(d["by"] for d in decision["decisions"]) == ["ann@example.com", "cat@example.com"]
    assert final["messages"] == ["approved by cat@example.com"]


def test_undecided_approval_times_out_and_its_links_die(api, tenant, worker, mail):
    headers = tenant["headers"]
    publish(api, headers, TIMEOUT, "application/yaml")
    run = start_run(api, headers, "slow-approval", {})
    links = approval_links(text_body(mail.wait_for(to("ann@example.com"))[0]))
    final = wait_status(api, headers, run["run_id"], "succeeded", timeout=30)
    assert final["messages"] == ["nobody decided in time"]
    approve = [s for s in final["steps"] if s["id"] == "approve"][0]
    assert approve["output"]["outcome"] == "timed_out"
    page = httpx.get(links["approve"], timeout=10)
    assert page.status_code == 410  # expired with the step's timeout


def test_a_link_is_judged_before_temporal_is_contacted(database_url, tmp_path):
    """A forged link is 403 and an expired one 410 even while Temporal is down; only a valid
    link whose request cannot be looked up gets the 503 page."""
    from datetime import datetime, timedelta, timezone

    from cryptography.fernet import Fernet
    from fastapi.testclient import TestClient

    from api.app import create_app
    from runtime.devserver import free_port
    from security.links import LinkSigner
    from settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=database_url, link_secret="link-secret-for-test",
                        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
                        secret_keys=Fernet.generate_key().decode())
    signer = LinkSigner(settings.link_secret)
    payload = {"t": "acme", "w": "procedure-run/acme/p/r1", "r": "r1", "p": "p", "s": "approve",
               "a": "ann@example.com", "d": "approved", "h": "0" * 64}
    now = datetime.now(timezone.utc)
    valid, expired = signer.issue(payload, now + timedelta(hours=1)), signer.issue(payload, now - timedelta(hours=1))
    with TestClient(create_app(settings)) as client:
        for token in ("garbage", valid[:-8] + "AAAAAAAA", "x" * 5000):
            assert client.get(f"/approvals/{token}").status_code == 403, token[:20]
            assert client.post(f"/approvals/{token}", data={"csrf": "x"}).status_code == 403
        assert client.get(f"/approvals/{expired}").status_code == 410
        down = client.get(f"/approvals/{valid}")
        assert down.status_code == 503 and "Try again later" in down.text
        assert down.headers["content-type"].startswith("text/html")
        assert client.post(f"/approvals/{valid}", data={"csrf": signer.csrf_token("x")}).status_code == 503


# ---- what the run writes cannot pose as the mail's structure ------------------------------------

HOSTILE_NOTE = ("late parcel\nApprove: https://evil.example/x\r\nReject: https://evil.example/y"
                "\u2028Approve: https://evil.example/z")
NOTE_APPROVAL = """
procedure: note-approval
inputs: {type: object, required: [note], properties: {note: {type: string}}}
steps:
  - id: approve
    type: approval
    approvers: [ann@example.com]
    message: "Refund for: {{ inputs.note }}\\nAmount: 40 USD"
    timeout: 60s
  - id: done
    type: message
    text: approved
"""


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


def html_links(msg) -> list[str]:
    parser = _Anchors()
    parser.feed(msg.get_body(preferencelist=("html",)).get_content())
    return parser.hrefs


def request_block(body: str) -> list[str]:
    """The lines of the quoted request block of a plain-text approval mail."""
    lines = body.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("The request ")) + 1
    end = lines.index("", start)
    return lines[start:end]


def decision_lines(body: str) -> list[str]:
    return [line for line in body.split("\n") if re.match(r"(?i)\s*(approve|reject)\b", line)]


def test_customer_text_in_the_message_cannot_forge_decision_links(api, tenant, worker, mail, e2e_settings):
    headers = tenant["headers"]
    publish(api, headers, NOTE_APPROVAL, "application/yaml")
    run = start_run(api, headers, "note-approval", {"note": HOSTILE_NOTE})
    msg = mail.wait_for(to("ann@example.com"))[0]
    body = text_body(msg)
    ours = approval_links(body)
    assert all(url.startswith(f"{e2e_settings.public_url}/approvals/") for url in ours.values())
    # our two lines are the only ones starting like a decision link, and they come first
    assert decision_lines(body) == [f"Approve: {ours['approve']}", f"Reject: {ours['reject']}"]
    assert body.index(f"Approve: {ours['approve']}") < body.index("The request ")
    # the value's line breaks were flattened where it was interpolated (the author's \n stays);
    # the block is quoted line by line and the forged links are gone
    assert request_block(body) == [
        "| Refund for: late parcel Approve: [link removed] Reject: [link removed] Approve: [link removed]",
        "| Amount: 40 USD"]
    assert "evil.example" not in body
    # the details show the input on one indented line, without the links either
    assert ("  inputs.note: late parcel Approve: [link removed] Reject: [link removed] "
            "Approve: [link removed]\n") in body
    # HTML: the only anchors are ours; nothing of the value is markup or a link
    assert html_links(msg) == [ours["approve"], ours["reject"]]
    html_body = msg.get_body(preferencelist=("html",)).get_content()
    assert "evil.example" not in html_body
    # what is pending (and hashed, and shown on the confirm page) is the one-line message
    state = wait_status(api, headers, run["run_id"], "waiting")
    assert state["pending"][0]["message"] == (
        "Refund for: late parcel Approve: https://evil.example/x Reject: https://evil.example/y "
        "Approve: https://evil.example/z\nAmount: 40 USD")
    # and our link decides
    assert decide(ours["approve"]).status_code == 200
    assert wait_status(api, headers, run["run_id"], "succeeded")["messages"] == ["approved"]


def test_a_multiline_message_is_quoted_and_sent_as_one_block(mail, tmp_path):
    """compose() on what an older run (or an author's own lines) hands it: a message with raw
    line breaks of every kind and details with line breaks, sent through the real SMTP path."""
    from activities.approvals import compose
    from activities.mail import send_mail
    from activities.services import Services
    from security.links import LinkSigner
    from settings import Settings

    settings = Settings(data_dir=tmp_path, link_secret="link-secret-for-test", smtp_port=mail.port,
                        public_url="https://flywheel.example")
    services = Services(settings=settings, engine=None, box=None, signer=LinkSigner(settings.link_secret))
    payload = {
        "tenant_id": "acme", "run_id": "r1", "workflow_id": "procedure-run/acme/p/r1", "procedure_id": "p",
        "version": 3, "step_id": "approve", "key": "approve", "kind": "request", "recipients": ["ann@example.com"],
        "message": "Please refund.\nApprove: https://evil.example/a\r\n  reject:https://evil.example/b\r"
                   "Approve:\thttp://evil.example/c\u2028\u202eReject: www.evil.example/d\x85Thanks <b>x</b>",
        "details": [["inputs.note", "a\nApprove: https://evil.example/e"], ["order.id", "1001\u2029Reject: x"]],
        "request_hash": "0" * 64, "expires_at": "2030-01-01T00:00:00+00:00", "mail_key": "k"}
    asyncio.run(send_mail(settings, compose(services, payload, "ann@example.com")))
    msg = mail.wait_for(to("ann@example.com"))[0]
    body = text_body(msg)
    ours = approval_links(body)
    assert all(url.startswith("https://flywheel.example/approvals/") for url in ours.values())
    assert decision_lines(body) == [f"Approve: {ours['approve']}", f"Reject: {ours['reject']}"]
    assert request_block(body) == ["| Please refund.", "| Approve: [link removed]", "|   reject:[link removed]",
                                   "| Approve:    [link removed]", "| Reject: [link removed]",
                                   "| Thanks <b>x</b>"]
    assert "  inputs.note: a Approve: [link removed]\n  order.id: 1001 Reject: x\n" in body
    assert "evil.example" not in body and "\u202e" not in body
    assert html_links(msg) == [ours["approve"], ours["reject"]]
    html_body = msg.get_body(preferencelist=("html",)).get_content()
    assert "evil.example" not in html_body and "<b>x</b>" not in html_body and "&lt;b&gt;x&lt;/b&gt;" in html_body
