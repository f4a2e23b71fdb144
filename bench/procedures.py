"""Orchestration overhead of the procedure interpreter against a hand-written workflow.

Usage: .venv/bin/python bench/procedures.py [--runs N] [--concurrency C] [--rounds R] [--profile]

Starts a local Temporal dev server (runtime.devserver.DevServer: our search attributes, WAL
pragmas, a temp db file) and one worker, then alternates rounds A, B, A, B, ... (after one
unmeasured warm-up round of each):

  A) N runs of a 5-step procedure (lookup, switch, action, set, message) through the real
     ProcedureRun interpreter workflow, started with client.start_workflow(RunInput) and the
     search attributes of workflows.search.run_search_attributes;
  B) N runs of PlainWorkflow (below), which calls the same three activities (lookup, action,
     message) directly, with the same activity options and the same start search attributes.

Both use the SAME cheap in-process activities registered under the interpreter's activity names
(no network, fixed mapped result), so the difference is orchestration only. At most C runs are
in flight at a time. Per-run latency is start_workflow -> result; throughput is runs per second of
round wall time. The last line is
`throughput_ratio=X latency_ratio=Y runs_per_s=Z p50_ms=W` (Z, W: the interpreter's).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

with workflow.unsafe.imports_passed_through():
    from workflows import types as T

PLAIN_WORKFLOW = "BenchPlainRun"
TENANT = "bench"
EMAIL = "ann@example.com"

PROCEDURE_YAML = """\
procedure: bench-five-steps
title: Five steps
description: lookup, switch, action, set, message.
inputs:
  type: object
  required: [email]
  properties:
    email: {type: string, format: email}
defaults:
  timeout: 30s
  retry: {max_attempts: 3, initial_interval: 1s, backoff: 2.0, max_interval: 30s}
steps:
  - id: find_order
    type: lookup
    connector: shopify
    operation: orders.get
    params: {email: "{{ inputs.email }}"}
    save_as: order
  - id: check_amount
    type: switch
    cases:
      - when: order.total > 100
        goto: refund
    default: refund
  - id: refund
    type: action
    connector: shopify
    operation: refunds.create
    params: {order_id: "{{ order.id }}"}
    save_as: refund_result
  - id: summary
    type: set
    set:
      refund_id: "{{ refund_result.refund_id }}"
  - id: confirm
    type: message
    text: "Your refund of {{ order.total }} {{ order.currency }} has been processed."
    end: true
"""

# What the connector operations return after the response mapping (no network).
RESULTS: dict[str, dict[str, Any]] = {
    "orders.get": {"id": 1001, "name": "#1001", "total": 150.0, "currency": "USD"},
    "refunds.create": {"refund_id": 9001, "amount": "150.00"},
}


# ---- the activities both workflows call -----------------------------------------------------
class BenchActivities:
    """In-process stand-ins for the production activities, under the same names."""

    def __init__(self) -> None:
        self.calls = 0

    @activity.defn(name=T.CALL_CONNECTOR)
    async def call_connector(self, p: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"status": 200, "result": RESULTS[p["operation"]], "assigned": {},
                "attempt": activity.info().attempt}

    @activity.defn(name=T.SEND_MESSAGE)
    async def send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {"attempt": 1}

    def all(self) -> list:
        return [self.call_connector, self.send_message]


# ---- B: the same three calls, written by hand -------------------------------------------------
@dataclass
class PlainInput:
    tenant_id: str
    run_id: str
    email: str
    conversation: dict[str, Any] = field(default_factory=dict)
    # --profile variants only: upsert CurrentStep/RunStatus like the interpreter does, and carry
    # a payload of the interpreter's size in the input and the result.
    upserts: bool = False
    carry: dict[str, Any] | None = None


# The interpreter's options for connector steps (the procedure's defaults) and for messages.
CONNECTOR_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                maximum_interval=timedelta(seconds=30), maximum_attempts=3,
                                non_retryable_error_types=["validation", "expression", "connector"]),
}
MESSAGE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                maximum_interval=timedelta(seconds=30), maximum_attempts=10,
                                non_retryable_error_types=["validation", "expression", "connector"]),
}


CURRENT_STEP = SearchAttributeKey.for_keyword("CurrentStep")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")


@workflow.defn(name=PLAIN_WORKFLOW)
class PlainWorkflow:
    @workflow.run
    async def run(self, inp: PlainInput) -> dict[str, Any]:
        def show(*updates) -> None:
            if inp.upserts:
                workflow.upsert_search_attributes(list(updates))

        base = {"tenant_id": inp.tenant_id, "run_id": inp.run_id, "dry_run": False}
        show(CURRENT_STEP.value_set("find_order"))
        order = (await workflow.execute_activity(T.CALL_CONNECTOR, {
            **base, "step_id": "find_order", "connector": "shopify", "operation": "orders.get",
            "params": {"email": inp.email}, "assign": None, "idempotency_key": None,
            "timeout_s": 30.0}, **CONNECTOR_OPTIONS))["result"]
        show(CURRENT_STEP.value_set("refund"))
        refund = (await workflow.execute_activity(T.CALL_CONNECTOR, {
            **base, "step_id": "refund", "connector": "shopify", "operation": "refunds.create",
            "params": {"order_id": order["id"]}, "assign": None,
            "idempotency_key": f"{inp.tenant_id}:{inp.run_id}:refund", "timeout_s": 30.0},
            **CONNECTOR_OPTIONS))["result"]
        text = f"Your refund of {order['total']} {order['currency']} has been processed."
        show(CURRENT_STEP.value_set("confirm"))
        await workflow.execute_activity(T.SEND_MESSAGE, {
            **base, "step_id": "confirm", "seq": 1, "text": text,
            "conversation": inp.conversation}, **MESSAGE_OPTIONS)
        show(CURRENT_STEP.value_set(""), RUN_STATUS.value_set(T.SUCCEEDED))
        return {"status": T.SUCCEEDED, "messages": [text], "refund_id": refund["refund_id"],
                **({"carry": inp.carry} if inp.carry else {})}


# ---- driver -------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Tally:
    name: str
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    runs: int = 0
    rounds: list[float] = field(default_factory=list)  # runs/s of each round
    cpu: float = 0.0  # CPU seconds of this process (client + worker) during the rounds
    server_cpu: float = 0.0  # CPU seconds of the dev server during the rounds

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.wall if self.wall else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def proc_cpu(pid: int | None) -> float:
    """utime + stime of process `pid` in seconds (0 when unknown)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, TypeError):
        return 0.0


class Bench:
    def __init__(self, client, task_queue: str, definition: dict, sha256: str, bench_mod,
                 server_pid: int | None = None) -> None:
        self.client, self.task_queue, self.server_pid = client, task_queue, server_pid
        self.definition, self.sha256, self.mod = definition, sha256, bench_mod
        self.ids: dict[str, list[str]] = {"A": [], "B": [], "C": [], "D": []}

    def run_input(self, run_id: str) -> T.RunInput:
        return T.RunInput(tenant_id=TENANT, run_id=run_id, procedure_id=self.definition["procedure"],
                          version=1, sha256=self.sha256, definition=self.definition,
                          inputs={"email": EMAIL}, conversation={"channel": "api"})

    async def one(self, kind: str) -> float:
        from workflows.search import run_search_attributes

        run_id = uuid.uuid4().hex[:16]
        run = self.run_input(run_id)
        attrs = run_search_attributes(run, run.conversation.get("channel"))
        t0 = time.perf_counter()
        if kind == "A":
            wf_id = T.workflow_id(TENANT, run.procedure_id, run_id)
            handle = await self.client.start_workflow(
                T.WORKFLOW_NAME, run, id=wf_id, task_queue=self.task_queue, search_attributes=attrs)
        else:
            # B plain; C plain + the interpreter's upserts; D like C, carrying the definition
            wf_id = f"bench-plain/{TENANT}/{run_id}"
            inp = self.mod.PlainInput(TENANT, run_id, EMAIL, run.conversation, upserts=kind in "CD",
                                      carry=self.definition if kind == "D" else None)
            handle = await self.client.start_workflow(
                PLAIN_WORKFLOW, inp, id=wf_id, task_queue=self.task_queue, search_attributes=attrs)
        out = await handle.result()
        elapsed = time.perf_counter() - t0
        if out["status"] != T.SUCCEEDED:
            raise RuntimeError(f"{kind} run {run_id} ended {out['status']}: {out.get('error')}")
        self.ids[kind].append(wf_id)
        return elapsed

    async def round(self, kind: str, runs: int, concurrency: int, tally: Tally | None) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def gated() -> float:
            async with gate:
                return await self.one(kind)

        cpu0, scpu0 = time.process_time(), proc_cpu(self.server_pid)
        t0 = time.perf_counter()
        latencies = await asyncio.gather(*(gated() for _ in range(runs)))
        wall = time.perf_counter() - t0
        if tally is not None:
            tally.cpu += time.process_time() - cpu0
            tally.server_cpu += proc_cpu(self.server_pid) - scpu0
            tally.latencies += latencies
            tally.wall += wall
            tally.runs += runs
            tally.rounds.append(runs / wall)


import os as _os
PROFILE_TYPE = _os.environ.get("BENCH_CPROFILE")  # e.g. ProcedureRun: cProfile its activations
PROFILES: list = []


def timed_runner(inner, totals: dict[str, list[float]]):
    """A workflow runner around `inner` adding up, per workflow type, the thread CPU time of
    creating instances and of their activations (totals[type] = [create_s, activate_s, n])."""
    from temporalio.worker import WorkflowInstance, WorkflowRunner

    class TimedInstance(WorkflowInstance):
        def __init__(self, wrapped, slot: list[float]) -> None:
            self.wrapped, self.slot = wrapped, slot

        def activate(self, act):
            t0 = time.thread_time()
            prof = None
            if PROFILE_TYPE and self.wrapped.get_info().workflow_type == PROFILE_TYPE:
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            try:
                return self.wrapped.activate(act)
            finally:
                if prof is not None:
                    prof.disable()
                    PROFILES.append(prof)
                self.slot[1] += time.thread_time() - t0
                self.slot[2] += 1

        def get_serialization_context(self, *a, **kw):
            return self.wrapped.get_serialization_context(*a, **kw)

        def get_external_store_context(self, *a, **kw):
            return self.wrapped.get_external_store_context(*a, **kw)

        def get_info(self):
            return self.wrapped.get_info()

        def get_thread_id(self):
            return self.wrapped.get_thread_id()

        def __getattr__(self, name):
            return getattr(self.wrapped, name)

    class TimedRunner(WorkflowRunner):
        def prepare_workflow(self, defn) -> None:
            inner.prepare_workflow(defn)

        def create_instance(self, det):
            slot = totals.setdefault(det.defn.name, [0.0, 0.0, 0])
            t0 = time.thread_time()
            wrapped = inner.create_instance(det)
            slot[0] += time.thread_time() - t0
            return TimedInstance(wrapped, slot)

        def set_worker_level_failure_exception_types(self, types) -> None:
            inner.set_worker_level_failure_exception_types(types)

    return TimedRunner()


async def history_profile(client, wf_id: str) -> dict[str, Any]:
    """Events by type and payload bytes of one finished run."""
    from collections import Counter

    handle = client.get_workflow_handle(wf_id)
    kinds: Counter = Counter()
    total = 0
    payload_bytes: Counter = Counter()
    async for event in handle.fetch_history_events():
        name = event.WhichOneof("attributes").removesuffix("_event_attributes")
        kinds[name] += 1
        size = event.ByteSize()
        total += size
        payload_bytes[name] += size
    return {"events": sum(kinds.values()), "bytes": total, "by_type": dict(kinds),
            "bytes_by_type": dict(payload_bytes)}


def print_profile(label: str, prof: dict[str, Any]) -> None:
    print(f"  {label}: {prof['events']} events, {prof['bytes']} bytes of history")
    for name in sorted(prof["by_type"]):
        print(f"    {name:<44} x{prof['by_type'][name]:<3} {prof['bytes_by_type'][name]:>6} B")


async def main_async(args: argparse.Namespace) -> None:
    from temporalio.client import Client
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from connectors.catalog import builtin_connectors
    from procedures.loader import definition_sha256, load_procedure
    from runtime.devserver import DevServer
    from runtime import workers
    from workflows.procedure_run import ProcedureRunWorkflow

    import bench.procedures as mod  # this file as an importable module (not __main__)

    definition = load_procedure(PROCEDURE_YAML, "bench-five-steps.yaml", builtin_connectors())
    sha = definition_sha256(definition)

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    server = DevServer(db_file=tmp / "dev.db", log_file=tmp / "dev.log", wal=True)
    t_start = time.perf_counter()
    server.start()
    runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    try:
        client = await Client.connect(server.address, runtime=runtime)
        task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        acts = mod.BenchActivities()
        # build_worker's configuration (runtime/workers.py) with PlainWorkflow registered next to
        # ProcedureRun on the same worker. The bench module is passed through the sandbox like the
        # interpreter's own modules (`workflows`, `procedures`), so neither workflow re-imports
        # its code per run.
        runner = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *workers.PASSTHROUGH, "bench"))
        totals: dict[str, list[float]] = {}
        if args.profile:
            runner = timed_runner(runner, totals)
        worker = Worker(client, task_queue=task_queue,
                        workflows=[ProcedureRunWorkflow, mod.PlainWorkflow], activities=acts.all(),
                        workflow_runner=runner,
                        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
                        graceful_shutdown_timeout=timedelta(seconds=10))
        bench = Bench(client, task_queue, definition, sha, mod, server.proc.pid)
        tallies = {"A": Tally("interpreter"), "B": Tally("plain"),
                   "C": Tally("plain+upsert"), "D": Tally("plain+ups+io")}
        kinds = ["A", "B", "C", "D"] if args.profile else ["A", "B"]
        async with worker:
            # warm-up (not measured): sandbox, sticky caches, server tables
            for kind in kinds:
                await bench.round(kind, max(args.concurrency, 10), args.concurrency, None)
            order = []
            for r in range(args.rounds):
                order += kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                await bench.round(kind, args.runs, args.concurrency, tallies[kind])
            profiles = None
            if args.profile:
                profiles = {k: await history_profile(client, bench.ids[k][-1]) for k in kinds}
        elapsed = time.perf_counter() - t_start
    finally:
        server.stop()

    a, b = tallies["A"], tallies["B"]
    print(f"dev server (sqlite WAL, {tmp / 'dev.db'}), 1 worker, {args.rounds} rounds x {args.runs} runs "
          f"each of {'/'.join(kinds)}, concurrency {args.concurrency}, order {''.join(order)}, {elapsed:.1f}s total")
    print(f"{'':<13}{'runs':>6}{'runs/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
          f"{'cpu ms/run':>12}{'server ms/run':>15}   runs/s per round")
    for t in (tallies[k] for k in kinds):
        per_round = " ".join(f"{x:.1f}" for x in t.rounds)
        print(f"{t.name:<13}{t.runs:>6}{t.runs_per_s:>9.2f}{t.p(0.5):>9.1f}{t.p(0.95):>9.1f}"
              f"{max(t.latencies) * 1000:>9.1f}{t.cpu / t.runs * 1000:>12.2f}"
              f"{t.server_cpu / t.runs * 1000:>15.2f}   {per_round}")
    if profiles:
        print("history of one run:")
        for k in kinds:
            print_profile(tallies[k].name, profiles[k])
        print("workflow code CPU in the worker (thread time, all runs incl. warm-up):")
        for name, (create, activate, n) in totals.items():
            runs = sum(len(v) for k, v in bench.ids.items() if (k == "A") == (name == T.WORKFLOW_NAME))
            print(f"  {name:<16} runs {runs:>4}  sandbox create {create / runs * 1000:6.2f} ms/run  "
                  f"activations {activate / runs * 1000:6.2f} ms/run ({n / runs:.1f}/run)")
    if PROFILES:
        import pstats
        stats = pstats.Stats(PROFILES[0])
        for prof in PROFILES[1:]:
            stats.add(prof)
        stats.sort_stats("cumulative").print_stats(_os.environ.get("BENCH_CPROFILE_FILTER", ""), 45)
        if _os.environ.get("BENCH_CPROFILE_CALLERS"):
            stats.print_callers(_os.environ["BENCH_CPROFILE_CALLERS"])
    throughput_ratio = a.runs_per_s / b.runs_per_s
    latency_ratio = a.p(0.5) / b.p(0.5)
    verdict = "met" if throughput_ratio >= 0.9 and latency_ratio <= 1.1 else "NOT met"
    print(f"targets (throughput_ratio >= 0.9, latency_ratio <= 1.1): {verdict}")
    print(f"throughput_ratio={throughput_ratio:.2f} latency_ratio={latency_ratio:.2f} "
          f"runs_per_s={a.runs_per_s:.2f} p50_ms={a.p(0.5):.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per round and kind (default 30)")
    parser.add_argument("--concurrency", type=int, default=10, help="runs in flight (default 10)")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds of each kind (default 8)")
    parser.add_argument("--profile", action="store_true",
                        help="also run C (plain + the interpreter's search-attribute upserts) and D (C + an "
                             "interpreter-sized input and result), and print one history of each kind")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    import bench.procedures as _mod  # run the importable module, so the workflow is not __main__'s

    _mod.main()
