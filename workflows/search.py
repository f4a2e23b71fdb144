"""Search attributes of a run (spec §8): ids and status only, never personal data. Pure."""
from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from workflows.types import RUNNING, RunInput

TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
PROCEDURE_ID = SearchAttributeKey.for_keyword("ProcedureId")
PROCEDURE_VERSION = SearchAttributeKey.for_int("ProcedureVersion")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")
CURRENT_STEP = SearchAttributeKey.for_keyword("CurrentStep")
CHANNEL = SearchAttributeKey.for_keyword("Channel")


def run_search_attributes(run: RunInput, channel: str | None = None) -> TypedSearchAttributes:
    """The attributes a run starts with."""
    pairs = [
        SearchAttributePair(TENANT_ID, run.tenant_id),
        SearchAttributePair(PROCEDURE_ID, run.procedure_id),
        SearchAttributePair(PROCEDURE_VERSION, int(run.version)),
        SearchAttributePair(RUN_STATUS, RUNNING),
        SearchAttributePair(CHANNEL, channel or "api"),
    ]
    return TypedSearchAttributes(pairs)
