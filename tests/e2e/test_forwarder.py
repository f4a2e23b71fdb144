"""The inbound outbox relay (channels/forwarder.py) on a real database and the real Temporal dev
server: accepted messages reach their conversations (signal-with-start, in order per thread);
while Temporal cannot be reached they stay pending, and nothing is
lost when it comes back (the relay pauses, growing, while nothing gets through)."""
from __future__ import annotations

import asyncio

import httpx
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from channels.forwarder import Forwarder
from db.channels import accept_inbound
from db.engine import make_engine, session_scope
from db.models import InboundMessage
from runtime.devserver import free_port
from tests_e2e_helpers import make_tenant
from workflows import conversation_types as C


def accept(engine, tenant: str, sid: str, thread: str, text: str) -> None:
    with session_scope(engine) as s:
        assert accept_inbound(s, tenant_id=tenant, channel="sms", external_id=sid, thread=thread, text=text,
                              customer={"phone": "+" + thread}, message_id=sid)


def outbox(engine) -> list[InboundMessage]:
    with session_scope(engine) as s:
        return list(s.exec(select(InboundMessage).order_by(InboundMessage.id)))


async def signals(client: Client, workflow_id: str) -> list[str]:
    """The message ids signalled into a conversation, in history order."""
    found = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            payload = event.workflow_execution_signaled_event_attributes.input.payloads[0]
            found.append(client.data_converter.payload_converter.from_payload(payload, C.MessageIn).message_id)
    return found


def test_the_relay_forwards_in_order_and_keeps_messages_while_temporal_is_away(e2e_settings, shop):
    tenant = make_tenant(e2e_settings, shop[0])["id"]
    engine = make_engine(e2e_settings.resolved_database_url())
    try:
        accept(engine, tenant, "SMa1", "15550000001", "first")
        accept(engine, tenant, "SMb1", "15550000002", "other thread")
        accept(engine, tenant, "SMa2", "15550000001", "second")

        async def scenario() -> None:
            # Temporal away: nothing forwarded, every row still pending, attempts counted
            async def unreachable() -> Client:
                return await Client.connect(f"127.0.0.1:{free_port()}")
            away = Forwarder(e2e_settings, engine, unreachable, poll_s=0.05).start()
            await asyncio.sleep(1.5)
            await away.stop()
            assert away.backoff_s >= 1.0  # it pauses instead of hammering
            rows = outbox(engine)
            assert [r.forwarded_at for r in rows] == [None, None, None]

            # Temporal back: everything goes, a thread's messages in order, once
            client = await Client.connect(e2e_settings.temporal_address)
            relay = Forwarder(e2e_settings, engine, lambda: _same(client), poll_s=0.05).start()
            try:
                for _ in range(100):
                    if all(r.forwarded_at for r in outbox(engine)):
                        break
                    await asyncio.sleep(0.1)
                assert all(r.forwarded_at for r in outbox(engine))
                first = C.conversation_id(tenant, "sms", "15550000001")
                assert await signals(client, first) == ["SMa1", "SMa2"]
                assert await signals(client, C.conversation_id(tenant, "sms", "15550000002")) == ["SMb1"]

                # a message accepted later is picked up by the poll (no kick)
                accept(engine, tenant, "SMa3", "15550000001", "third")
                for _ in range(100):
                    if await signals(client, first) == ["SMa1", "SMa2", "SMa3"]:
                        break
                    await asyncio.sleep(0.1)
                assert await signals(client, first) == ["SMa1", "SMa2", "SMa3"]
            finally:
                await relay.stop()
                for thread in {r.thread for r in outbox(engine)}:
                    await client.get_workflow_handle(C.conversation_id(tenant, "sms", thread)).terminate()

        asyncio.run(scenario())
    finally:
        engine.dispose()


async def _same(client: Client) -> Client:
    return client


def test_rows_temporal_refuses_wait_then_are_given_up_without_blocking_other_threads(e2e_settings, shop, api):
    """Six rows Temporal refuses (a payload over its size limit), more than a batch, in front of
    good ones: the good rows of other threads go at once, the refused rows wait between tries
    and are given up (failed, listed, retryable) after max_attempts; the row behind a refused one
    in its own thread goes once that one is given up; Temporal's own trouble never gives up."""
    tenant = make_tenant(e2e_settings, shop[0])
    engine = make_engine(e2e_settings.resolved_database_url())
    big = "x" * 2_500_000  # over the dev server's 2 MB payload limit: INVALID_ARGUMENT
    try:
        for i in range(6):
            accept(engine, tenant["id"], f"SMpoison{i}", f"1555000100{i}", big)
        accept(engine, tenant["id"], "SMbehind", "15550001000", "behind the refused one")
        for i in range(3):
            accept(engine, tenant["id"], f"SMgood{i}", f"1555000200{i}", f"good {i}")
        rows = {r.message_id: r for r in outbox(engine)}

        async def scenario() -> None:
            client = await Client.connect(e2e_settings.temporal_address)
            relay = Forwarder(e2e_settings, engine, lambda: _same(client), poll_s=0.05, batch=4, max_attempts=3,
                              retry_base_s=2.0).start()
            try:
                for _ in range(300):
                    now = {r.message_id: r for r in outbox(engine)}
                    if now["SMbehind"].forwarded_at and all(now[f"SMpoison{i}"].failed_at for i in range(6)):
                        break
                    await asyncio.sleep(0.1)
            finally:
                await relay.stop()
                for thread in ("15550001000", "15550002000", "15550002001", "15550002002"):
                    try:
                        await client.get_workflow_handle(C.conversation_id(tenant["id"], "sms", thread)).terminate()
                    except Exception:
                        pass

        asyncio.run(scenario())
        now = {r.message_id: r for r in outbox(engine)}
        poison = [now[f"SMpoison{i}"] for i in range(6)]
        good = [now[f"SMgood{i}"] for i in range(3)]
        assert all(p.failed_at and p.forwarded_at is None and p.attempts == 3 for p in poison)
        assert all("RPCError" in p.last_error for p in poison), poison[0].last_error
        assert all(g.forwarded_at for g in good)
        # not blocked: the good rows went before the first refused row was even given up
        assert max(g.forwarded_at for g in good) < min(p.failed_at for p in poison)
        # in its thread's order: after the refused row was given up
        assert now["SMbehind"].forwarded_at and now["SMbehind"].forwarded_at >= now["SMpoison0"].failed_at
        assert rows["SMbehind"].id > rows["SMpoison0"].id

        failed = httpx.get(f"{api}/v1/channels/inbound", headers=tenant["headers"], timeout=15).json()["messages"]
        assert [m["message_id"] for m in failed] == [f"SMpoison{i}" for i in range(6)]
        assert all(m["attempts"] == 3 and m["failed_at"] and m["last_error"] for m in failed)
        assert "text" not in failed[0] and "customer" not in failed[0]
        r = httpx.post(f"{api}/v1/channels/inbound/{failed[0]['id']}/retry", headers=tenant["headers"], timeout=15)
        assert r.status_code == 200 and r.json()["failed_at"] is None and r.json()["attempts"] == 0
        assert httpx.post(f"{api}/v1/channels/inbound/{failed[0]['id']}/retry", headers=tenant["headers"],
                          timeout=15).status_code == 404  # not failed any more
        other = make_tenant(e2e_settings, shop[0])
        assert httpx.post(f"{api}/v1/channels/inbound/{failed[1]['id']}/retry", headers=other["headers"],
                          timeout=15).status_code == 404  # another tenant's row
        pending = httpx.get(f"{api}/v1/channels/inbound", params={"status": "pending"}, headers=tenant["headers"],
                            timeout=15).json()["messages"]
        assert [m["message_id"] for m in pending] == ["SMpoison0"]

        # Temporal's own trouble (here: a namespace it does not have) is nobody's row's fault
        async def misconfigured() -> None:
            client = await Client.connect(e2e_settings.temporal_address, namespace="no-such-namespace")
            relay = Forwarder(e2e_settings, engine, lambda: _same(client), poll_s=0.05, max_attempts=2).start()
            for _ in range(100):
                if next(r for r in outbox(engine) if r.message_id == "SMpoison0").attempts >= 4:
                    break
                await asyncio.sleep(0.1)
            await relay.stop()
        asyncio.run(misconfigured())
        row = next(r for r in outbox(engine) if r.message_id == "SMpoison0")
        assert row.attempts >= 4 and row.failed_at is None and row.forwarded_at is None
    finally:
        engine.dispose()
