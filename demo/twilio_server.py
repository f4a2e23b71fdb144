"""A loopback stand-in for Twilio's Messages API, in its wire format, recording what it got.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   (form: To, From, Body, StatusCallback...)
      Basic auth AccountSid:AuthToken -> 201 with Twilio's message JSON (sid "SM...", status "queued")

Tests and the channel bench point `FLYWHEEL_TWILIO_API_BASE` at it. `GET /_loopback/messages`
lists what was received (for a server run in another process:
`python -m demo.twilio_server --port 8765 --account AC...:token`).
"""
from __future__ import annotations

import argparse
import base64
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class TwilioState:
    """Accounts the server accepts (sid -> auth token) and the messages it received."""

    accounts: dict[str, str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # The next N message requests fail with this status (500: Twilio's retryable error).
    fail_next: int = 0
    fail_status: int = 500
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def received(self, to: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if to is None or m["to"] == to]

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.fail_next = 0


def _error(status: int, code: int, message: str) -> JSONResponse:
    # Twilio's error body
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status)


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    return user, password


def create_twilio_app(state: TwilioState) -> FastAPI:
    app = FastAPI(title="loopback Twilio")

    @app.post("/2010-04-01/Accounts/{account_sid}/Messages.json")
    async def create_message(account_sid: str, request: Request):
        auth = _basic_auth(request)
        if auth is None or state.accounts.get(auth[0]) != auth[1] or auth[0] != account_sid:
            return _error(401, 20003, "Authenticate")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if not form.get("To"):
            return _error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body") and not form.get("MediaUrl"):
            return _error(400, 21602, "Message body is required.")
        if len(form.get("Body", "")) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        with state.lock:
            if state.fail_next > 0:
                state.fail_next -= 1
                return _error(state.fail_status, 20500, "Internal Server Error")
            now = format_datetime(datetime.now(UTC))
            sid = "SM" + uuid.uuid4().hex
            message = {
                "account_sid": account_sid, "api_version": "2010-04-01", "body": form.get("Body", ""),
                "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
                "error_code": None, "error_message": None, "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"), "num_media": "0",
                "num_segments": str(max(1, -(-len(form.get("Body", "")) // 153))), "price": None,
                "price_unit": "USD", "sid": sid, "status": "queued", "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
                "to": form["To"], "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"}
            state.messages.append({**message, "status_callback": form.get("StatusCallback"),
                                   "user_agent": request.headers.get("user-agent", "")})
        return JSONResponse(message, status_code=201)

    @app.get("/_loopback/messages")
    def messages() -> dict[str, Any]:
        return {"messages": state.received()}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--account", action="append", default=[], help="SID:TOKEN (repeatable)")
    args = parser.parse_args()
    state = TwilioState(accounts=dict(a.split(":", 1) for a in args.account))
    uvicorn.run(create_twilio_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
