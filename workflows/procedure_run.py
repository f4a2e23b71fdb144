"""ProcedureRun: one Temporal workflow per procedure run (spec §8).

Exposes the interpreter's state through queries and takes approvals and answers as Updates
whose validators reject stale or forged requests before anything is written to history.
"""
from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.engine import Interpreter
    from workflows.state import redact
    from workflows import types as T


@workflow.defn(name=T.WORKFLOW_NAME)
class ProcedureRunWorkflow:
    def __init__(self) -> None:
        self.interp: Interpreter | None = None

    @workflow.run
    async def run(self, run: T.RunInput) -> dict[str, Any]:
        self.interp = Interpreter(run)
        return await self.interp.execute()

    # ---- queries ----------------------------------------------------------------------
    @workflow.query
    def state(self) -> dict[str, Any]:
        it = self.interp
        if it is None:
            return {"status": T.RUNNING, "current_step": None, "vars": {}, "steps": [],
                    "messages": [], "pending": [], "error": None, "result": None, "output": None}
        status = T.WAITING if it.pending and it.status == T.RUNNING else it.status
        return {"status": status, "current_step": it.current_step, "error": it.error,
                "result": it.result, "output": it.output, "vars": redact(it.public_vars()),
                "steps": [s.as_dict() for s in it.steps], "messages": list(it.messages),
                "pending": [self._public_pending(p) for p in it.pending.values()]}

    @workflow.query
    def status(self) -> str:
        return self.state()["status"]

    @workflow.query
    def current_step(self) -> str | None:
        return self.interp.current_step if self.interp else None

    @workflow.query
    def variables(self) -> dict[str, Any]:
        return redact(self.interp.public_vars()) if self.interp else {}

    @workflow.query
    def step_log(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.interp.steps] if self.interp else []

    @workflow.query
    def pending_approval(self, key: str) -> dict[str, Any] | None:
        """What an approval page shows (approvers, message, details, request hash) of the
        approval pending at `key` (its path and step id, e.g. `each[1]/approve`)."""
        pend = self._approval(key)
        if pend is None:
            return None
        return {k: pend[k] for k in ("key", "step_id", "path", "approvers", "quorum", "message",
                                     "details", "request_hash", "expires_at")} | {
            "decided": sorted(pend["decisions"])}

    @staticmethod
    def _public_pending(p: dict) -> dict[str, Any]:
        keep = ("kind", "key", "step_id", "path", "text", "attempt", "max_attempts", "approvers",
                "quorum", "message", "expires_at", "until", "procedure", "workflow_id")
        out = {k: p[k] for k in keep if k in p}
        if "decisions" in p:
            out["decided"] = sorted(p["decisions"])
        return out

    # ---- approvals --------------------------------------------------------------------
    @workflow.update
    def decide(self, d: T.Decision) -> dict[str, Any]:
        pend = self._approval(d.step_id)
        pend["decisions"][d.approver.lower()] = {
            "by": d.approver.lower(), "decision": d.decision, "comment": d.comment,
            "at": workflow.now().isoformat()}
        if d.link_id:
            self.interp.used_links.add(d.link_id)
        return {"step_id": d.step_id, "decision": d.decision, "recorded": True}

    @decide.validator
    def _validate_decide(self, d: T.Decision) -> None:
        it = self.interp
        pend = self._approval(d.step_id)
        if pend is None:
            raise ValueError(f"stale: step {d.step_id[:200]!r} is not waiting for an approval")
        if d.request_hash and d.request_hash != pend["request_hash"]:
            raise ValueError("stale: what is being approved has changed since the link was sent")
        if d.decision not in ("approved", "rejected"):
            raise ValueError(f"decision must be approved or rejected, not {d.decision!r}")
        if d.approver.lower() not in pend["approvers"]:
            raise ValueError(f"{d.approver} is not an approver of step {d.step_id!r}")
        if d.link_id and d.link_id in it.used_links:
            raise ValueError("this approval link was already used")
        if d.approver.lower() in pend["decisions"]:
            raise ValueError(f"{d.approver} already decided on step {d.step_id!r}")

    def _approval(self, key: str) -> dict[str, Any] | None:
        """The pending approval at `key` (path and id), or the only one of step `key` waiting: a
        link or Update from before waits were keyed by path names the plain step id."""
        pending = self.interp.pending if self.interp else {}
        pend = pending.get(key)
        if pend is not None:
            return pend if pend["kind"] == "approval" else None
        same = [p for p in pending.values() if p["kind"] == "approval" and p["step_id"] == key]
        return same[0] if len(same) == 1 else None

    # ---- answers to `ask` ---------------------------------------------------------------
    @workflow.update
    def answer(self, a: T.Answer) -> dict[str, Any]:
        sid = self._ask_step(a)
        checked = self.interp.check_answer(sid, a.text)
        self.interp.answers[sid].append(checked)
        return {"step_id": sid, "accepted": checked["ok"], "message": checked.get("problem", "")}

    @workflow.signal(name=T.ANSWER_SIGNAL)
    def answer_signal(self, a: T.Answer) -> None:
        """The conversation forwards the customer's reply (workflows cannot send Updates)."""
        try:
            self.answer(a)
        except ValueError as err:
            workflow.logger.warning("answer ignored: %s", err)

    @answer.validator
    def _validate_answer(self, a: T.Answer) -> None:
        self._ask_step(a)

    def _ask_step(self, a: T.Answer) -> str:
        """The key of the pending ask `a` answers: `a.step_id` names its key (path and id) or,
        when only one is waiting under it, its plain step id."""
        asks = [p for p in (self.interp.pending.values() if self.interp else []) if p["kind"] == "ask"]
        if a.step_id:
            asks = ([p for p in asks if p["key"] == a.step_id]
                    or [p for p in asks if p["step_id"] == a.step_id])
        if not asks:
            where = f" at step {a.step_id[:200]!r}" if a.step_id else ""
            raise ValueError(f"no question is waiting for an answer{where}")
        if len(asks) > 1:
            keys = ", ".join(p["key"] for p in asks)
            raise ValueError(f"several questions are waiting ({keys}); say which step_id you answer")
        return asks[0]["key"]
