"""Approval links from e-mail (spec §3 approval).

GET shows what is being approved and changes nothing (mail scanners pre-fetch links).
POST, with the page's CSRF token, decides through the run's `decide` Update, whose validator
rejects a stale step, a used link or a non-approver. Expired or used link: 410; tampered: 403.
The link is judged before Temporal is contacted: a forged link is 403 even while Temporal is down
(503 only for a valid link whose request cannot be looked up).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session
from temporalio.client import Client

from api.deps import get_session, get_temporal
from api.errors import Unavailable
from api.pages import confirm_page, message_page, page
from api.temporal_errors import Rejected, RunNotFound, temporal_call
from db.errors import Conflict
from db.links import is_link_used, mark_link_used
from security.links import LinkExpired, LinkSigner, LinkTampered
from workflows import types as T

router = APIRouter(tags=["approvals"], include_in_schema=True)
MAX_TOKEN = 4096


def _signer(request: Request) -> LinkSigner:
    signer = getattr(request.app.state, "link_signer", None)
    if signer is None:
        signer = LinkSigner(request.app.state.settings.link_secret)
        request.app.state.link_signer = signer
    return signer


class LinkProblem(Exception):
    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


def _unavailable() -> LinkProblem:
    return LinkProblem(message_page("Try again later", "The approval service cannot be reached "
                                    "right now. Open the link again in a few minutes.", 503))


async def _check(request: Request, token: str, session: Session) -> tuple[dict, dict, Client]:
    """The link's payload, the pending approval it is for and the Temporal client, or a
    LinkProblem page. The token is verified before anything else is touched."""
    if len(token) > MAX_TOKEN:
        raise LinkProblem(message_page("Invalid link", "This approval link is not valid.", 403))
    try:
        link = _signer(request).verify(token, datetime.now(timezone.utc))
    except LinkTampered:
        raise LinkProblem(message_page("Invalid link", "This approval link is not valid. "
                                       "Use the link from the e-mail exactly as it was sent.", 403))
    except LinkExpired:
        raise LinkProblem(message_page("Link expired", "This approval link has expired.", 410))
    if is_link_used(session, link["lid"]):
        raise LinkProblem(message_page("Link already used", "This approval link was already used.", 410))
    try:
        client = await get_temporal(request)
        async with temporal_call("approval"):
            pending = await client.get_workflow_handle(link["w"]).query("pending_approval", link["s"])
    except RunNotFound:
        pending = None
    except Unavailable:
        raise _unavailable() from None
    if not pending or pending["request_hash"] != link["h"]:
        raise LinkProblem(message_page("No longer pending",
                                       "This request is no longer waiting for a decision.", 410))
    if link["a"] not in pending["approvers"]:
        raise LinkProblem(message_page("Not an approver", "You are not an approver of this request.", 403))
    if link["a"] in pending["decided"]:
        raise LinkProblem(message_page("Already decided", "You have already decided on this request.", 410))
    return link, pending, client


def _rows(link: dict, pending: dict) -> dict[str, Any]:
    return {"Request": pending["message"], "Procedure": link["p"], "Run": link["r"], "Step": link["s"],
            "Approver": link["a"], "Decision": link["d"], "Decide before": pending["expires_at"],
            "Approvals needed": pending["quorum"]}


@router.get("/approvals/{token}", response_class=HTMLResponse)
async def show_approval(token: str, request: Request, session: Session = Depends(get_session)) -> HTMLResponse:
    """The confirm page: the request, what it is about (the details its hash covers). Changes nothing."""
    try:
        link, pending, _ = await _check(request, token, session)
    except LinkProblem as problem:
        return problem.response
    return confirm_page(_rows(link, pending), link["d"], _signer(request).csrf_token(link["lid"]),
                        about=pending.get("details") or [])


@router.post("/approvals/{token}", response_class=HTMLResponse)
async def decide_approval(token: str, request: Request, csrf: str = Form(default="", max_length=256),
                          comment: str = Form(default="", max_length=2000),
                          session: Session = Depends(get_session)) -> HTMLResponse:
    """Record the decision (once)."""
    try:
        link, _, client = await _check(request, token, session)
    except LinkProblem as problem:
        return problem.response
    if not _signer(request).check_csrf(link["lid"], csrf):
        return message_page("Invalid form", "The form expired or did not come from this site. "
                            "Open the link from the e-mail again.", 403)
    decision = T.Decision(step_id=link["s"], approver=link["a"], decision=link["d"], comment=comment,
                          link_id=link["lid"], request_hash=link["h"])
    try:
        async with temporal_call("decide"):
            await client.get_workflow_handle(link["w"]).execute_update("decide", decision)
    except Rejected as err:
        return message_page("Not recorded", err.message, 410)
    except Unavailable:
        return _unavailable().response
    try:
        mark_link_used(session, link["lid"], tenant_id=link["t"], workflow_id=link["w"], step_id=link["s"],
                       approver=link["a"], decision=link["d"])
    except Conflict:
        session.rollback()
    verb = "approved" if link["d"] == "approved" else "rejected"
    return page("Thank you", f"<p>You {verb} this request. You can close this page.</p>")
