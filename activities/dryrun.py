"""Activities of a dry run (`flywheel run`): the real executor and mapping, mocked transport.

Connector and http steps are answered from MOCKS (spec §9): per step id or
`connector.operation`, an HTTP response `{status, body, headers}`, an error name (`timeout`,
`connection`, `http_4xx`, `http_5xx`), or a list of those for successive attempts. Approvals are
decided and asks answered from the command line through the same Updates production uses.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import to_application_error
from connectors.errors import ConnectorError
from connectors.executor import CallResult, execute_http, execute_operation
from workflows import types as T

ERROR_STATUS = {"http_4xx": 400, "http_5xx": 503}


def _mock_transport(entry: Any) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(entry, str):
            if entry == "timeout":
                raise httpx.ReadTimeout("mocked timeout", request=request)
            if entry == "connection":
                raise httpx.ConnectError("mocked connection failure", request=request)
            if entry in ERROR_STATUS:
                return httpx.Response(ERROR_STATUS[entry], json={"error": entry})
            raise httpx.ConnectError(f"unknown mocked error {entry!r}", request=request)
        status = int(entry.get("status", 200))
        headers = {str(k): str(v) for k, v in (entry.get("headers") or {}).items()}
        body = entry.get("body")
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(status, text="" if body is None else str(body), headers=headers)
    return httpx.MockTransport(handler)


def secret_placeholders(names: Any) -> dict[str, str]:
    """Stand-in secret values: a dry run never reads real secrets."""
    return {n: f"dry-run-{n}".replace("_", "-") for n in names or []}


class DryRunActivities:
    def __init__(self, catalog: dict[str, dict], mocks: dict[str, Any], decisions: dict[str, str],
                 answers: dict[str, list[str]], procedures_dir: Path | None,
                 load: Callable[[str, str], dict] | None = None,
                 on_event: Callable[[str], None] = lambda line: None) -> None:
        self.catalog, self.mocks, self.decisions = catalog, mocks, decisions
        self.answers = {k: list(v) for k, v in answers.items()}
        self.procedures_dir, self.load, self.on_event = procedures_dir, load, on_event

    def _mock(self, *keys: str) -> Any:
        for key in keys:
            if key in self.mocks:
                entry = self.mocks[key]
                if isinstance(entry, list):
                    entry = entry[min(activity.info().attempt, len(entry)) - 1]
                return entry
        raise ApplicationError(f"dry run: no mock for step {keys[0]!r}; add `{keys[0]}:` "
                               f"{'or `' + keys[1] + ':` ' if len(keys) > 1 else ''}to --mock",
                               {"attempt": activity.info().attempt}, type="connector", non_retryable=True)

    @staticmethod
    def _result(res: CallResult) -> dict[str, Any]:
        return {"status": res.status, "result": res.result, "assigned": res.assigned,
                "attempt": activity.info().attempt}

    @activity.defn(name=T.CALL_CONNECTOR)
    async def call_connector(self, p: dict[str, Any]) -> dict[str, Any]:
        spec = self.catalog.get(p["connector"])
        if spec is None:
            raise ApplicationError(f"unknown connector {p['connector']!r}", type="connector", non_retryable=True)
        entry = self._mock(p["step_id"], f"{p['connector']}.{p['operation']}")
        try:
            res = await execute_operation(
                spec, p["operation"], p.get("params") or {}, secrets=secret_placeholders(spec.get("secrets")),
                idempotency_key=p.get("idempotency_key"), timeout=float(p["timeout_s"]),
                allowed_hosts=[], assign=p.get("assign"), transport=_mock_transport(entry))
        except ConnectorError as err:
            raise to_application_error(err) from None
        return self._result(res)

    @activity.defn(name=T.CALL_HTTP)
    async def call_http(self, p: dict[str, Any]) -> dict[str, Any]:
        entry = self._mock(p["step_id"])
        try:
            res = await execute_http(
                p["request"], scope=p.get("scope") or {}, secrets=secret_placeholders(p.get("secret_names")),
                timeout=float(p["timeout_s"]), allowed_hosts=[], assign=p.get("assign"),
                transport=_mock_transport(entry))
        except ConnectorError as err:
            raise to_application_error(err) from None
        return self._result(res)

    @activity.defn(name=T.SEND_MESSAGE)
    async def send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        self.on_event(f"  message: {p['text']}")
        queue = self.answers.get(p["step_id"])
        if queue:
            text = queue.pop(0)
            self.on_event(f"  answer: {text}")
            handle = activity.client().get_workflow_handle(activity.info().workflow_id)
            # the key addresses this very ask (the same step may wait in several loop items)
            await handle.execute_update("answer", T.Answer(text=text, step_id=p.get("key") or p["step_id"]))
        return {"attempt": activity.info().attempt}

    @activity.defn(name=T.SEND_APPROVAL_MAIL)
    async def send_approval_mail(self, p: dict[str, Any]) -> dict[str, Any]:
        decision = self.decisions.get(p["step_id"])
        self.on_event(f"  approval {p['kind']} to {', '.join(p['recipients'])}")
        for name, value in p.get("details") or []:
            if p["kind"] == "request":
                self.on_event(f"    {name}: {value}")
        if decision and p["kind"] == "request":
            key = p.get("key") or p["step_id"]
            handle = activity.client().get_workflow_handle(p["workflow_id"])
            pending = await handle.query("pending_approval", key)
            for approver in pending["approvers"][: pending["quorum"] if decision == "approved" else 1]:
                self.on_event(f"  {approver}: {decision}")
                await handle.execute_update("decide", T.Decision(
                    step_id=key, approver=approver, decision=decision, comment="dry run",
                    link_id=f"dry-run:{key}:{approver}", request_hash=p["request_hash"]))
        return {"attempt": activity.info().attempt}

    def _file(self, procedure_id: str) -> dict | None:
        """The definition in PROCEDURE_ID.yaml|.yml|.json beside the procedure, if any."""
        for ext in (".yaml", ".yml", ".json"):
            path = (self.procedures_dir or Path(".")) / f"{procedure_id}{ext}"
            if path.exists() and self.load:
                return self.load(path.read_text(), str(path))
        return None

    @activity.defn(name=T.RESOLVE_PROCEDURE)
    async def resolve_procedure(self, p: dict[str, Any]) -> dict[str, Any]:
        from procedures.loader import definition_sha256
        definition = self._file(p["procedure_id"])
        if definition is None:
            raise ApplicationError(f"dry run: no file {p['procedure_id']}.yaml beside the procedure",
                                   type="validation", non_retryable=True)
        return {"definition": definition, "version": int(definition.get("version") or 1),
                "sha256": definition_sha256(definition), "attempt": activity.info().attempt}

    @activity.defn(name=T.PIN_PROCEDURES)
    async def pin_procedures(self, p: dict[str, Any]) -> dict[str, Any]:
        """The files beside the procedure are the only versions a dry run knows."""
        from activities.procedures import pin_closure

        async def load(procedure: str, version: int | None) -> tuple[int, dict] | None:
            definition = self._file(procedure)
            return None if definition is None else (int(definition.get("version") or 1), definition)

        return {"pins": await pin_closure(p["procedures"], load), "attempt": activity.info().attempt}

    def all(self) -> list:
        return [self.call_connector, self.call_http, self.send_message, self.send_approval_mail,
                self.resolve_procedure, self.pin_procedures]


def load_mocks(text: str) -> dict[str, Any]:
    import yaml
    data = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("MOCKS must be a map from step id or connector.operation to a response")
    return json.loads(json.dumps(data, default=str))
