"""Approval e-mails: each approver gets signed Approve and Reject links.

A link is bound to tenant, run, step, approver, decision and the hash of what is approved (the
message and the details: the run's inputs and saved values, as the mail shows them), and expires
with the step's timeout. Opening it shows a confirm page (api/routes/approvals.py). What the run
wrote (the message, the details) is shown so that it cannot pose as the mail's own structure.
"""
from __future__ import annotations

import hashlib
import html
import re
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from temporalio import activity

from activities.mail import send_mail
from activities.services import Services
from workflows import types as T

SUBJECTS = {"request": "Approval needed", "reminder": "Reminder: approval needed",
            "escalation": "Escalated: approval needed"}


def approval_links(services: Services, p: dict[str, Any], approver: str) -> dict[str, str]:
    """The Approve and Reject URLs for one approver."""
    expires = datetime.fromisoformat(p["expires_at"])
    base = services.settings.public_url.rstrip("/")
    links = {}
    for decision in ("approved", "rejected"):
        token = services.signer.issue({
            "t": p["tenant_id"], "w": p["workflow_id"], "r": p["run_id"], "p": p["procedure_id"],
            "s": p.get("key") or p["step_id"], "a": approver, "d": decision, "h": p["request_hash"],
        }, expires)
        links[decision] = f"{base}/approvals/{token}"
    return links


# Line breaks of every kind (str.splitlines' set: a mail client may start a line at any) and the
# invisible characters that reorder or hide text (bidi overrides, zero-width marks).
_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_HIDDEN = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
# A line that names a decision and carries a link could pose as one of our decision lines
# (`Approve: <url>`): its links are removed (the mail's links are ours, at their fixed place).
_DECISION = re.compile(r"\b(?:approv|reject|decid|confirm|accept|den[yi]|declin)", re.I)
_URL = re.compile(r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S*", re.I)
LINK_REMOVED = "[link removed]"
QUOTE = "| "


def neutralized(line: str) -> str:
    """`line` without its links when it also names a decision (approve, reject, ...)."""
    return _URL.sub(LINK_REMOVED, line) if _DECISION.search(line) and _URL.search(line) else line


def one_line(value: Any) -> str:
    """`value` as one line of text: line breaks and tabs become spaces, hidden characters go."""
    return neutralized(" ".join(_HIDDEN.sub("", _BREAKS.sub(" ", str(value))).replace("\t", " ").split()))


def request_lines(message: str) -> list[str]:
    """The request's lines as shown: every kind of line break splits, hidden characters go, a
    line posing as a decision link loses its links."""
    return [neutralized(_HIDDEN.sub("", line).replace("\t", "    ").rstrip())
            for line in _BREAKS.split(message or "")]


def compose(services: Services, p: dict[str, Any], approver: str) -> EmailMessage:
    """The approval mail to one approver.

    The request message and the details come from the run (a template may quote customer text),
    so nothing of them can pose as structure: our two links come first, on the only lines that
    start with `Approve:` and `Reject:`; the message follows as a quoted block (every line
    starts with `| `), each detail is one indented line, and a line that names a decision and
    carries a link loses the link; in HTML every value is escaped and our links are the only
    anchors.
    """
    links = approval_links(services, p, approver)
    step = p.get("key") or p["step_id"]
    details = [(one_line(name), one_line(value)) for name, value in p.get("details") or []]
    lines = request_lines(p["message"])
    subject = f"{SUBJECTS[p['kind']]}: {p['procedure_id']} / {step}"
    quoted = "".join(f"{QUOTE}{line}".rstrip() + "\n" for line in lines)
    shown = "".join(f"  {name}: {value}\n" for name, value in details)
    text = (f"{SUBJECTS[p['kind']]} for procedure {p['procedure_id']} v{p['version']}, step {step}.\n"
            f"Decide with one of these two links (the only links of this request), before {p['expires_at']}:\n\n"
            f"Approve: {links['approved']}\nReject: {links['rejected']}\n\n"
            "The request (written by the procedure; it may quote what a customer wrote):\n"
            f"{quoted}\n"
            + (f"Details:\n{shown}\n" if details else "")
            + f"Procedure: {p['procedure_id']} v{p['version']}\nRun: {p['run_id']}\n"
            f"Step: {step}\nDecide before: {p['expires_at']}\n")
    esc = html.escape
    rows = "".join(f"<tr><th align=left>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in details)
    body = (f"<p>{esc(SUBJECTS[p['kind']])} for procedure <b>{esc(p['procedure_id'])}</b> v{esc(str(p['version']))}, "
            f"step <code>{esc(step)}</code>. Decide before {esc(p['expires_at'])}:</p>"
            f"<p><a href=\"{esc(links['approved'])}\">Approve</a> &nbsp; "
            f"<a href=\"{esc(links['rejected'])}\">Reject</a></p>"
            "<p>The request (written by the procedure; it may quote what a customer wrote):</p>"
            "<blockquote style=\"border-left:3px solid #999;margin:0 0 1em;padding:0 .8em;white-space:pre-wrap\">"
            + "<br>".join(esc(line) for line in lines) + "</blockquote>"
            + (f"<table>{rows}</table>" if details else "")
            + f"<p>Run <code>{esc(p['run_id'])}</code>.</p>")
    msg = EmailMessage()
    msg["To"] = approver
    msg["Subject"] = subject
    key = hashlib.sha256(f"{p['mail_key']}:{approver}".encode()).hexdigest()[:32]
    msg["Message-ID"] = make_msgid(idstring=key, domain="flywheel.local")
    msg["X-Flywheel-Run"] = p["run_id"]
    msg["X-Flywheel-Step"] = step
    msg.set_content(text)
    msg.add_alternative(body, subtype="html")
    return msg


class ApprovalActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=T.SEND_APPROVAL_MAIL)
    async def send_approval_mail(self, p: dict[str, Any]) -> dict[str, Any]:
        for approver in p["recipients"]:
            await send_mail(self.services.settings, compose(self.services, p, approver))
        return {"sent": list(p["recipients"]), "attempt": activity.info().attempt}
