"""`flywheel run`: a dry run of a procedure file on the time-skipping test server (spec §9).

The real interpreter runs on a local Temporal test environment with time skipping, so a 48h
approval timeout passes in a moment; connector and http steps are answered from mocks.
"""
from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any, Callable

from temporalio.client import WorkflowFailureError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment

from activities.dryrun import DryRunActivities
from connectors.catalog import builtin_connectors
from procedures.inputs import validate_inputs
from procedures.loader import definition_sha256, load_procedure
from runtime.devserver import register_search_attributes, test_server_path
from runtime.workers import build_worker
from workflows import types as T
from workflows.search import run_search_attributes

TASK_QUEUE = "flywheel-dry-run"


def _runtime() -> Runtime:
    """A Temporal runtime for one dry run. Its core logs are kept off stdout (so `--json` prints
    only JSON), and it is dropped when the run ends, so its threads stop while Python is alive
    (the process-wide default runtime lives until interpreter shutdown, which can abort)."""
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))


def _load(text: str, filename: str) -> dict:
    return load_procedure(text, filename, builtin_connectors())


async def dry_run(path: Path, inputs: dict[str, Any], mocks: dict[str, Any], decisions: dict[str, str],
                  answers: dict[str, list[str]], echo: Callable[[str], None],
                  step_budget: int | None = None,
                  on_history: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run the procedure in `path`; returns the run's outcome (spec §9 JSON shape).

    `step_budget` overrides RunInput's default bound on executed steps (tests use a small one).
    """
    definition = _load(path.read_text(), str(path))
    problems = validate_inputs(definition.get("inputs"), inputs)
    if problems:
        raise ValueError("invalid --input: " + "; ".join(problems))
    acts = DryRunActivities(builtin_connectors(), mocks, decisions, answers, path.parent,
                            load=_load, on_event=echo)
    run_id = uuid.uuid4().hex[:12]
    run = T.RunInput(tenant_id="dry-run", run_id=run_id, procedure_id=definition["procedure"],
                     version=int(definition.get("version") or 1), sha256=definition_sha256(definition),
                     definition=definition, inputs=inputs, dry_run=True)
    if step_budget is not None:
        run.step_budget = step_budget
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path(), runtime=_runtime()) as env:
        await register_search_attributes(env.client)
        async with build_worker(env.client, TASK_QUEUE, acts.all()):
            handle = await env.client.start_workflow(
                T.WORKFLOW_NAME, run, id=T.workflow_id("dry-run", run.procedure_id, run_id),
                task_queue=TASK_QUEUE, search_attributes=run_search_attributes(run, "dry-run"))
            printer = StepPrinter(echo)
            poll = asyncio.create_task(printer.follow(handle))
            try:
                outcome = await handle.result()
            except WorkflowFailureError as err:
                outcome = {"status": T.FAILED, "error": {"name": "workflow", "step": None,
                                                          "message": str(err.cause or err)},
                           "steps": [], "messages": [], "vars": {}}
            finally:
                poll.cancel()
                # let the in-flight query finish before the environment and runtime shut down
                await asyncio.gather(poll, return_exceptions=True)
            if on_history is not None:
                on_history(await handle.fetch_history())
    del env, handle, acts
    gc.collect()  # drop the run's runtime now (see _runtime)
    printer.show(outcome.get("steps", []), final=True)
    return outcome


class StepPrinter:
    """Prints each step once, in log order, as soon as it has finished."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo, self.printed = echo, 0

    def show(self, steps: list[dict], final: bool = False) -> None:
        for step in steps[self.printed:]:
            if step["status"] == "running" and not final:
                return
            extra = f" ({step['error']['name']}: {step['error']['message']})" if step.get("error") else ""
            attempts = f" attempts={step['attempts']}" if step.get("attempts") else ""
            self.echo(f"{step['path']}{step['id']}: {step['status']}{attempts}{extra}")
            self.printed += 1

    async def follow(self, handle) -> None:
        while True:
            try:
                self.show((await handle.query("state"))["steps"])
            except Exception:  # the run may not have started its first task yet
                pass
            await asyncio.sleep(0.05)


def json_report(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"status": outcome["status"], "error": outcome.get("error"), "output": outcome.get("output"),
            "steps": [{"id": s["id"], "status": s["status"], "attempts": s["attempts"],
                       "output": s.get("output")} for s in outcome.get("steps", [])],
            "messages": outcome.get("messages", []), "vars": outcome.get("vars", {})}
