"""Fixtures of the channel tests: the whole API (every channel's routes) on the test database
(SQLite, and PostgreSQL when FLYWHEEL_TEST_POSTGRES_URL is set), with Temporal pointed at a port
where nothing listens (webhooks must not need it), tenants, signed requests of each channel in
its wire format, and readers of what the channels recorded."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlmodel import select
from twilio.request_validator import RequestValidator

from api.app import create_app
from db.engine import make_engine, session_scope
from db.models import ChannelEvent, InboundMessage
from db.tenants import create_tenant
from runtime.devserver import free_port
from settings import Settings

TWILIO_SID, TWILIO_TOKEN = "AC" + "7" * 32, "twilio-token-for-tests"
SMS_NUMBER, WA_NUMBER, VOICE_NUMBER = "+15550000001", "+15550000002", "+15550000003"
SLACK_SECRET, SLACK_BOT = "slack-signing-secret-0123456789ab", "xoxb-1-2-bot-token-for-tests"
TEAM, APP = "T061EG9R6", "A0PNCHHK2"
META_SECRET, META_VERIFY, META_TOKEN = "meta-app-secret-0123456789abcdef", "meta-verify-token", "EAAG-page-token"
PAGE_ID, IG_ID = "104530012345678", "17841400008460056"
EMAIL_SECRET = "inbound-parse-secret-for-tests"
PUBLIC_URL = "https://support.acme.example/fw"   # what Twilio sees: a proxy in front of the API


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path, secret_keys=Fernet.generate_key().decode(),
                    admin_token="admin-channels", public_url=PUBLIC_URL,
                    temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens: Temporal is away
                    email_inbound_domain="mail.flywheel.test")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@dataclass
class Tenant:
    id: str
    headers: dict


def new_tenant(client: TestClient, name: str = "Acme") -> Tenant:
    r = client.post("/v1/tenants", json={"name": f"{name} {uuid.uuid4().hex[:6]}"},
                    headers={"X-Admin-Token": "admin-channels"})
    assert r.status_code == 201, r.text
    return Tenant(r.json()["id"], {"Authorization": f"Bearer {r.json()['api_key']}"})


CONFIGS = {
    "sms": {"settings": {"phone_number": SMS_NUMBER},
            "secrets": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}},
    "whatsapp": {"settings": {"phone_number": WA_NUMBER},
                 "secrets": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}},
    "voice": {"settings": {"phone_number": VOICE_NUMBER, "greeting": "Hi!", "transfer_number": "+15559990000"},
              "secrets": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}},
    "slack": {"settings": {"team_id": TEAM, "api_app_id": APP, "bot_user_id": "UBOT00001"},
              "secrets": {"signing_secret": SLACK_SECRET, "bot_token": SLACK_BOT}},
    "messenger": {"settings": {"page_id": PAGE_ID},
                  "secrets": {"verify_token": META_VERIFY, "app_secret": META_SECRET, "page_access_token": META_TOKEN}},
    "instagram": {"settings": {"account_id": IG_ID},
                  "secrets": {"verify_token": META_VERIFY, "app_secret": META_SECRET + "-ig",
                              "page_access_token": META_TOKEN + "-ig"}},
    "email": {"settings": {"from_address": "support@acme.example", "display_name": "Acme"},
              "secrets": {"webhook_secret": EMAIL_SECRET}},
    "web": {"settings": {"allowed_origins": ["https://shop.acme.example"], "title": "Help"}, "secrets": {}},
}


def configure(client: TestClient, tenant: Tenant, *channels: str) -> dict:
    out = {}
    for channel in channels or tuple(CONFIGS):
        r = client.put(f"/v1/channels/{channel}", json=CONFIGS[channel], headers=tenant.headers)
        assert r.status_code == 200, r.text
        out[channel] = r.json()
    return out


@pytest.fixture
def tenant(client: TestClient) -> Tenant:
    """A tenant with every channel configured."""
    t = new_tenant(client)
    configure(client, t)
    return t


# ---- what was recorded -----------------------------------------------------------------------
class Store:
    def __init__(self, settings: Settings) -> None:
        self.engine = make_engine(settings.resolved_database_url())

    def outbox(self, tenant_id: str | None = None) -> list[InboundMessage]:
        with session_scope(self.engine) as s:
            stmt = select(InboundMessage).order_by(InboundMessage.id)
            if tenant_id:
                stmt = stmt.where(InboundMessage.tenant_id == tenant_id)
            return list(s.exec(stmt))

    def events(self, tenant_id: str | None = None) -> list[ChannelEvent]:
        with session_scope(self.engine) as s:
            stmt = select(ChannelEvent).order_by(ChannelEvent.id)
            if tenant_id:
                stmt = stmt.where(ChannelEvent.tenant_id == tenant_id)
            return list(s.exec(stmt))

    def snapshot(self) -> tuple:
        """Everything the inbound paths write, comparable before/after."""
        return ([(r.tenant_id, r.channel, r.thread, r.text, r.kind) for r in self.outbox()],
                [(e.tenant_id, e.channel, e.external_id, e.kind) for e in self.events()])


@pytest.fixture
def store(settings: Settings, client) -> Iterator[Store]:
    s = Store(settings)
    yield s
    s.engine.dispose()


# ---- signed requests in each channel's wire format ------------------------------------------
def twilio_headers(url: str, params: dict, token: str = TWILIO_TOKEN) -> dict:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def sms_form(sender: str = "+15551230001", body: str = "hello", to: str = SMS_NUMBER, **extra) -> dict:
    return {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": TWILIO_SID, "From": sender, "To": to,
            "Body": body, "NumMedia": "0", "ApiVersion": "2010-04-01", **extra}


def slack_headers(body: bytes, secret: str = SLACK_SECRET, ts: int | None = None) -> dict:
    stamp = str(int(time.time()) if ts is None else ts)
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig}


def slack_event(text: str = "hello", *, team: str = TEAM, app: str = APP, event_id: str | None = None,
                **event) -> bytes:
    ts = f"{int(time.time())}.{uuid.uuid4().int % 1_000_000:06d}"
    ev = {"type": "message", "channel": "C0LAN2Q65", "user": "U2147483697", "text": text, "ts": ts, **event}
    return json.dumps({"token": "x", "team_id": team, "api_app_id": app, "type": "event_callback",
                       "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}", "event_time": int(time.time()),
                       "authorizations": [{"team_id": team, "user_id": "UBOT00001", "is_bot": True}],
                       "event": ev}).encode()


def meta_headers(body: bytes, secret: str = META_SECRET) -> dict:
    return {"Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def meta_event(text: str = "hello", *, obj: str = "page", own: str = PAGE_ID, recipient: str | None = None,
               sender: str = "6543210987654321", mid: str | None = None, **message) -> bytes:
    msg = {"mid": mid or f"m_{uuid.uuid4().hex}", "text": text, **message}
    return json.dumps({"object": obj, "entry": [{"id": own, "time": int(time.time() * 1000), "messaging": [
        {"sender": {"id": sender}, "recipient": {"id": recipient or own}, "timestamp": int(time.time() * 1000),
         "message": msg}]}]}).encode()
