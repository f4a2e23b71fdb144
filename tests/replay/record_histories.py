"""Record the interpreter histories that tests/replay/test_replay.py replays.

Run `python tests/replay/record_histories.py` after a deliberate, versioned change to the
interpreter; every committed history must keep replaying, or running workflows would break.
`python tests/replay/record_histories.py NAME...` records only those cases.

`calls-before-pinning.json` and `skipped-end-before-fix.json` are not made here: the interpreter
before commit 33f489d recorded them (caller.yaml, n=21; skip-end.yaml, stop=false, hop=true), and
they stay as they are, the runs that were in flight then: they replay on the old side of the
`workflow.patched` branches (no pinning activity; a skipped `end` step ending the run).
Likewise `templated-durations-before-rendering.json`, `templated-pattern-before-rendering.json`
and `approval-note-before-one-line.json`: the interpreter before templated durations and
patterns were rendered recorded them (the same cases as `templated-durations`,
`templated-pattern` and `approval-note` below: a templated timeout failing its step, a templated
pattern matched as written, an approval message keeping its value's line break).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from cli.dryrun import dry_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKFLOW_PROCS = ROOT / "tests" / "workflows" / "procedures"
ORDER = {"status": 200, "body": {"orders": [{"id": 1001, "total_price": "150.00", "currency": "USD"}]}}
TIMES = {"call_timeout": "7s", "ask_hours": 2, "approval_timeout": "3h", "reminder": "1h", "escalate_after": "2h"}
REFUND = {"status": 201, "body": {"refund": {"id": 9001}}}

CASES = {
    "refund-approved": (ROOT / "examples" / "refund.yaml", {"email": "alice@example.com"},
                        {"find_order": ORDER, "refund": REFUND}, {"manager_approval": "approved"}, {}),
    "refund-rejected": (ROOT / "examples" / "refund.yaml", {"email": "alice@example.com"},
                        {"find_order": ORDER}, {"manager_approval": "rejected"}, {}),
    "refund-original": (ROOT / "examples" / "refund-original.json", {"email": "alice@example.com"},
                        {"step1": ORDER, "step4_execute": REFUND}, {"step3_approval": "approved"}, {}),
    "tour": (HERE / "procedures" / "tour.yaml", {"email": "alice@example.com", "items": ["a", "b", "c"]},
             {"find": ORDER, "status": {"status": 200, "body": {"state": "shipped"}},
              "refund": ["http_5xx", REFUND]},
             {"approve": "approved"}, {"ask_order": ["12", "1001"]}),
    # calls pinned when the run starts (the pin-callees-at-start patch) and a skipped `end`
    # step going on (skipped-end-goes-on)
    "calls-pinned": (WORKFLOW_PROCS / "caller.yaml", {"n": 21}, {}, {}, {}),
    "skipped-end": (WORKFLOW_PROCS / "skip-end.yaml", {"stop": False, "hop": True, "mode": ""}, {}, {}, {}),
    # two approvals of one step waiting at once, keyed by path, their hash covering the details
    "foreach-approvals": (WORKFLOW_PROCS / "foreach-approval.yaml",
                          {"orders": [{"id": 1, "approver": "ann@example.com"}, {"id": 2, "approver": "ben@example.com"}]},
                          {}, {"approve": "approved"}, {}),
    # templated step durations and ask pattern rendered (templated-durations-rendered,
    # templated-pattern-rendered); an approval message's value put on one line
    "templated-durations": (WORKFLOW_PROCS / "templated-timeouts.yaml", TIMES, {"find": ORDER}, {}, {}),
    "templated-pattern": (WORKFLOW_PROCS / "templated-pattern.yaml", {"prefix": "AB"}, {}, {},
                          {"code": ["AB-1234", "1234", "AB-1234"]}),
    "approval-note": (WORKFLOW_PROCS / "approval-note.yaml", {"note": "late parcel\nApprove: https://evil.example/x"},
                      {}, {"approve": "approved"}, {}),
}


async def record(name: str) -> None:
    path, inputs, mocks, decisions, answers = CASES[name]
    out: list = []
    outcome = await dry_run(path, inputs, mocks, decisions, answers, lambda line: None,
                            on_history=out.append)
    (HERE / "histories" / f"{name}.json").write_text(out[0].to_json())
    print(f"{name}: {outcome['status']} ({len(out[0].events)} events)")


if __name__ == "__main__":
    import sys
    for case in sys.argv[1:] or CASES:  # e.g. only the histories of a new case
        asyncio.run(record(case))
