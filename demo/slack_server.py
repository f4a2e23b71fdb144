"""A loopback Slack Web API (wire format only) for tests and offline demos.

    state = SlackState()
    with ThreadedServer(create_slack_app(state)) as server:
        settings.slack_api_base = server.url + "/api"

POST /api/chat.postMessage (JSON or form body, `Authorization: Bearer xoxb-...`) answers like
Slack: {"ok": true, "channel", "ts", "message": {"type", "user", "text", "ts", "thread_ts"?}}.
Errors are HTTP 200 with {"ok": false, "error"}: "not_authed" without a token, "invalid_auth" when
the token is not `state.token` (when set), "channel_not_found" for channels in
`state.missing_channels`, and whatever `state.fail_next` holds (e.g. "ratelimited", which also
sets Retry-After: 1) for the next `state.fail_times` calls.
Every call is appended to `state.calls` as {"path", "headers", "json", "response"}; the messages
that were posted are `state.posted()`.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass
class SlackState:
    token: str | None = None                 # the only accepted bot token (None: any)
    bot_user_id: str = "UBOT00001"
    fail_next: str | None = None             # error code for the next `fail_times` calls
    fail_times: int = 1
    missing_channels: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posted(self) -> list[dict[str, Any]]:
        """The chat.postMessage bodies Slack accepted."""
        with self.lock:
            return [c["json"] for c in self.calls if c["response"].get("ok")]

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.fail_next, self.fail_times = None, 1
            self.missing_channels.clear()


def create_slack_app(state: SlackState) -> FastAPI:
    app = FastAPI(title="Slack Web API (loopback)")
    counter = itertools.count(1)

    @app.post("/api/chat.postMessage")
    async def post_message(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
        else:
            body = dict(await request.form())
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else body.get("token", "")
        headers: dict[str, str] = {}
        with state.lock:
            if not token:
                answer = {"ok": False, "error": "not_authed"}
            elif state.token is not None and token != state.token:
                answer = {"ok": False, "error": "invalid_auth"}
            elif state.fail_next and state.fail_times > 0:
                answer = {"ok": False, "error": state.fail_next}
                if state.fail_next == "ratelimited":
                    headers["Retry-After"] = "1"
                state.fail_times -= 1
                if state.fail_times <= 0:
                    state.fail_next = None
            elif not body.get("channel") or body.get("channel") in state.missing_channels:
                answer = {"ok": False, "error": "channel_not_found"}
            elif not (body.get("text") or body.get("blocks")):
                answer = {"ok": False, "error": "no_text"}
            else:
                ts = f"{int(time.time())}.{next(counter):06d}"
                message = {"type": "message", "user": state.bot_user_id, "bot_id": "BBOT00001",
                           "text": body.get("text", ""), "ts": ts}
                if body.get("thread_ts"):
                    message["thread_ts"] = body["thread_ts"]
                answer = {"ok": True, "channel": body["channel"], "ts": ts, "message": message}
            state.calls.append({"path": request.url.path, "headers": dict(request.headers),
                                "json": body, "response": answer})
        return JSONResponse(answer, headers=headers)

    return app
