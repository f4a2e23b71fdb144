"""Connector operations and `http` steps: the activities that call other systems.

Secrets are read and decrypted here, inside the activity, and never returned.
"""
from __future__ import annotations

from typing import Any

import httpx
from temporalio import activity

from activities.errors import to_application_error
from activities.services import Services
from connectors.catalog import catalog_for
from connectors.errors import ConnectorError
from connectors.executor import CallResult, execute_http, execute_operation, redact
from db.connectors import list_connectors
from db.errors import StoreError
from db.secrets import get_secrets
from db.tenants import get_tenant
from workflows import types as T


def _scrub(value: Any, secrets: dict[str, Any]) -> Any:
    """``value`` with every secret value redacted (a server may echo a credential back)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def _result(res: CallResult, secrets: dict[str, Any]) -> dict[str, Any]:
    """What goes back to the workflow (and so into history): never a secret value."""
    return {"status": res.status, "result": _scrub(res.result, secrets), "assigned": _scrub(res.assigned, secrets),
            "attempt": activity.info().attempt}


class CallActivities:
    """Real calls: tenant's connectors, secrets and network policy from the database."""

    def __init__(self, services: Services, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.services = services
        self.transport = transport

    def _tenant_context(self, session, tenant_id: str, connector: str | None, secret_names: list[str]):
        tenant = get_tenant(session, tenant_id)
        settings = tenant.settings or {}
        catalog = catalog_for([row.spec for row in list_connectors(session, tenant_id)])
        spec = catalog.get(connector) if connector else None
        names = list(secret_names)
        if spec is not None:
            names += list(spec.get("secrets") or [])
        secrets = get_secrets(session, self.services.box, tenant_id, names) if names else {}
        allowed = list(settings.get("allowed_hosts") or [])
        allowed += [h for h in self.services.settings.global_allowed_hosts.split(",") if h]
        base_url = (settings.get("connector_base_urls") or {}).get(connector) if connector else None
        return spec, secrets, allowed, base_url

    @activity.defn(name=T.CALL_CONNECTOR)
    async def call_connector(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            spec, secrets, allowed, base_url = await self.services.db(
                self._tenant_context, p["tenant_id"], p["connector"], [])
            if spec is None:
                raise ConnectorError("connector", f"unknown connector {p['connector']!r}")
            res = await execute_operation(
                spec, p["operation"], p.get("params") or {}, secrets=secrets,
                idempotency_key=p.get("idempotency_key"), timeout=float(p["timeout_s"]),
                allowed_hosts=allowed, base_url_override=base_url, assign=p.get("assign"),
                transport=self.transport)
        except ConnectorError as err:
            raise to_application_error(err) from None
        except StoreError as err:
            raise to_application_error(ConnectorError("connector", str(err))) from None
        return _result(res, secrets)

    @activity.defn(name=T.CALL_HTTP)
    async def call_http(self, p: dict[str, Any]) -> dict[str, Any]:
        try:
            _, secrets, allowed, _ = await self.services.db(
                self._tenant_context, p["tenant_id"], None, p.get("secret_names") or [])
            res = await execute_http(
                p["request"], scope=p.get("scope") or {}, secrets=secrets,
                timeout=float(p["timeout_s"]), allowed_hosts=allowed, assign=p.get("assign"),
                transport=self.transport)
        except ConnectorError as err:
            raise to_application_error(err) from None
        except StoreError as err:
            raise to_application_error(ConnectorError("connector", str(err))) from None
        return _result(res, secrets)
