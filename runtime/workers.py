"""Building the Temporal worker that runs the interpreter and its activities."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Sequence

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.conversation import ConversationWorkflow
from workflows.ingest import IndexArticleWorkflow, IngestWorkflow, SearchWorkflow
from workflows.procedure_run import ProcedureRunWorkflow

# Pure modules the workflows import; passed through the sandbox so they load once per process.
PASSTHROUGH = ("procedures", "workflows", "simpleeval", "jsonschema", "jsonpath_ng", "yaml",
               "referencing", "rpds")


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))


def activities_for(services: Any) -> list:
    """The production activities, bound to `services`."""
    from activities.approvals import ApprovalActivities
    from activities.calls import CallActivities
    from activities.conversation import ConversationActivities
    from activities.knowledge import KnowledgeActivities
    from activities.messages import MessageActivities
    from activities.procedures import ProcedureActivities

    calls = CallActivities(services)
    return [calls.call_connector, calls.call_http,
            MessageActivities(services).send_message,
            ApprovalActivities(services).send_approval_mail,
            *ProcedureActivities(services).all(),
            *ConversationActivities(services).all(),
            *KnowledgeActivities(services).all()]


def build_worker(client: Client, task_queue: str, activities: Sequence,
                 workflows_extra: Sequence[type] = (), **options: Any) -> Worker:
    """A worker for ProcedureRun and `activities` on `task_queue`."""
    options.setdefault("sticky_queue_schedule_to_start_timeout", timedelta(seconds=2))
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    options.setdefault("max_concurrent_activities", 50)
    return Worker(client, task_queue=task_queue, workflows=[ProcedureRunWorkflow, ConversationWorkflow, IngestWorkflow,
                                                                    IndexArticleWorkflow, SearchWorkflow, *workflows_extra],
                  activities=list(activities), workflow_runner=sandbox_runner(), **options)
