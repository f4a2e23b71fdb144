"""The floor of a conversation turn: a workflow whose update returns at once."""
from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="BenchEcho")
class EchoWorkflow:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.update
    def ping(self, text: str) -> str:
        return text

    @workflow.signal
    def stop(self) -> None:
        self.done = True
