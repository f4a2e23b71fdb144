"""A tiny OpenAI-compatible server (wire format only) for tests and offline demos.

    behaviour = OpenAIBehaviour(mode="answer")
    with ThreadedServer(create_openai_app(behaviour)) as server:
        settings.openai_base_url = server.url + "/v1"

POST /v1/chat/completions and POST /v1/embeddings (and GET /v1/models). `behaviour.mode`:
- "answer": the first sentence of passage [1] found in the request's messages, plus " [1]"
  (or `behaviour.reply` verbatim when set);
- "dont_know": "I don't know";
- "tool:<name>": a tool call of function <name> (no arguments);
- "error_500": HTTP 500 with an OpenAI-style error body;
- "error_401": HTTP 401 whose message echoes the bearer token (like real servers do, partly);
- "slow": sleeps `behaviour.delay_s` before answering (longer than the client's timeout);
- "hang": never answers (holds the request until the client gives up, at most `hang_s`);
- "garbage": a 200 response that is not JSON.
Every request is appended to `behaviour.requests` as {"path", "headers", "json"}.
Embeddings are deterministic (hashed words, L2-normalized, `behaviour.dim` floats), so equal
texts get equal vectors and texts sharing words are similar.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

EMBEDDING_DIM = 384
_PASSAGE_ONE = re.compile(r"^\[1\][^\n]*\n(?P<body>(?:[^\n]+\n?)+)", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class OpenAIBehaviour:
    """What the fake server does; tests change `mode` between requests."""

    mode: str = "answer"
    reply: str | None = None      # "answer" mode: reply this text verbatim
    delay_s: float = 5.0          # "slow" mode
    hang_s: float = 600.0         # "hang" mode: the longest a request is held
    dim: int = EMBEDDING_DIM      # embeddings size
    requests: list[dict[str, Any]] = field(default_factory=list)


def _get(behaviour: Any, name: str, default: Any = None) -> Any:
    if isinstance(behaviour, dict):
        return behaviour.get(name, default)
    return getattr(behaviour, name, default)


def _log(behaviour: Any, entry: dict[str, Any]) -> None:
    log = _get(behaviour, "requests")
    if log is None and isinstance(behaviour, dict):
        log = behaviour.setdefault("requests", [])
    if log is not None:
        log.append(entry)


def embed_text(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """Deterministic L2-normalized vector: signed hashed word (and word-pair) counts."""
    vector = [0.0] * dim
    words = _WORD.findall(text.lower())
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)] or [text]
    for feature in features:
        digest = hashlib.sha256(feature.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:  # every feature cancelled out: fall back to one hashed coordinate
        vector[int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") % dim] = 1.0
        norm = 1.0
    return [x / norm for x in vector]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _answer_from_passages(messages: list[dict]) -> str:
    for message in messages:
        match = _PASSAGE_ONE.search(_text_of(message.get("content")))
        if match:
            body = " ".join(match.group("body").split())
            sentence = _SENTENCE_END.split(body, maxsplit=1)[0].strip()
            return f"{sentence} [1]"
    return "I don't know"


def _usage(prompt: str, completion: str = "") -> dict[str, int]:
    p, c = len(prompt.split()), len(completion.split())
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def create_openai_app(behaviour: Any = None) -> FastAPI:
    """The fake OpenAI app driven by `behaviour` (an OpenAIBehaviour or a dict with the same keys)."""
    if behaviour is None:
        behaviour = OpenAIBehaviour()
    app = FastAPI(title="Fake OpenAI")
    app.state.behaviour = behaviour

    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        _log(behaviour, {"path": request.url.path, "headers": dict(request.headers), "json": body})
        return body if isinstance(body, dict) else {}

    async def _failure(request: Request) -> Response | None:
        mode = str(_get(behaviour, "mode", "answer"))
        if mode == "error_500":
            return JSONResponse({"error": {"message": "The server had an error", "type": "server_error",
                                           "param": None, "code": None}}, status_code=500)
        if mode == "error_401":
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {token}.",
                                           "type": "invalid_request_error", "param": None,
                                           "code": "invalid_api_key"}}, status_code=401)
        if mode in ("slow", "hang"):  # stop early once the client gave up (quick, quiet shutdown)
            held = _get(behaviour, "delay_s", 5.0) if mode == "slow" else _get(behaviour, "hang_s", 600.0)
            deadline = time.monotonic() + float(held)
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(0.05)
            if mode == "hang":
                return Response(status_code=504)
        if mode == "garbage":
            return Response(b"{this is <not> json", media_type="application/json")
        return None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": "fake-chat", "object": "model", "created": 0, "owned_by": "flywheel"},
            {"id": "fake-embed", "object": "model", "created": 0, "owned_by": "flywheel"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _body(request)
        failure = await _failure(request)
        if failure is not None:
            return failure
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = "\n".join(_text_of(m.get("content")) for m in messages)
        mode = str(_get(behaviour, "mode", "answer"))
        finish = "stop"
        if mode.startswith("tool:"):
            name = mode.removeprefix("tool:")
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                 "function": {"name": name, "arguments": "{}"}}]}
            finish, content = "tool_calls", ""
        else:
            if mode == "dont_know":
                content = "I don't know"
            elif mode == "none":
                content = "none"
            else:
                content = _get(behaviour, "reply") or _answer_from_passages(messages)
            message = {"role": "assistant", "content": content, "refusal": None}
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or "fake-chat",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(prompt, content), "system_fingerprint": None})

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await _body(request)
        failure = await _failure(request)
        if failure is not None:
            return failure
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs or []]
        dim = int(body.get("dimensions") or _get(behaviour, "dim", EMBEDDING_DIM))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dim)
            embedding: Any = (base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
                              if as_base64 else vector)
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model") or "fake-embed",
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return app
