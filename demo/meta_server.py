"""A loopback Meta Graph API Send API (wire format only) for tests and offline demos.

    state = MetaState(tokens={"EAAG-page-token"})
    with ThreadedServer(create_meta_app(state)) as server:
        settings.meta_graph_base = server.url + "/v19.0"

POST /{version}/me/messages?access_token=... with {recipient: {id}, messaging_type, message:
{text}} answers {"recipient_id", "message_id"} like the Send API. A token not in `state.tokens`
(when set) gets HTTP 400 {"error": {"message", "type": "OAuthException", "code": 190,
"fbtrace_id"}}; a text over 2000 characters gets code 100; `state.fail_next` (a Graph error
code, e.g. 2 "temporarily unavailable" -> HTTP 503) fails the next `state.fail_times` calls.
Every call is appended to `state.calls` as {"path", "query", "json", "status", "response"}; the
messages accepted are `state.sent()`.
"""
from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class MetaState:
    tokens: set[str] | None = None           # accepted page access tokens (None: any non-empty)
    fail_next: int | None = None
    fail_times: int = 1
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c["json"] for c in self.calls if c["status"] == 200]

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.fail_next, self.fail_times = None, 1


def graph_error(message: str, type_: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "fbtrace_id": uuid.uuid4().hex[:11]}}


def create_meta_app(state: MetaState) -> FastAPI:
    app = FastAPI(title="Meta Graph API (loopback)")
    counter = itertools.count(1)

    @app.post("/{version}/me/messages")
    async def send(version: str, request: Request) -> JSONResponse:
        token = request.query_params.get("access_token", "")
        try:
            body = await request.json()
        except ValueError:
            body = None
        with state.lock:
            if not token or (state.tokens is not None and token not in state.tokens):
                status, answer = 400, graph_error("Invalid OAuth access token - Cannot parse access token",
                                                  "OAuthException", 190)
            elif state.fail_next is not None and state.fail_times > 0:
                status, answer = 503, graph_error("An unexpected error has occurred. Please retry your request "
                                                  "later.", "OAuthException", state.fail_next)
                state.fail_times -= 1
                if state.fail_times <= 0:
                    state.fail_next = None
            elif not isinstance(body, dict) or not (body.get("recipient") or {}).get("id"):
                status, answer = 400, graph_error("(#100) The parameter recipient is required",
                                                  "OAuthException", 100)
            elif len(str((body.get("message") or {}).get("text") or "")) > 2000:
                status, answer = 400, graph_error("(#100) Length of param message[text] must be less than or "
                                                  "equal to 2000", "OAuthException", 100)
            else:
                status = 200
                answer = {"recipient_id": str(body["recipient"]["id"]),
                          "message_id": f"m_{next(counter):04d}{uuid.uuid4().hex[:20]}"}
            state.calls.append({"path": request.url.path, "query": dict(request.query_params),
                                "json": body, "status": status, "response": answer})
        return JSONResponse(answer, status_code=status)

    return app
