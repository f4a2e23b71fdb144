"""Commands that talk to a running Flywheel over its HTTP API: `chat` and `knowledge add`."""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

import httpx

from db.knowledge import file_article_id, path_article_id
from settings import get_settings


def api_defaults(api: str | None, key: str | None) -> tuple[str, str]:
    """The API URL and key: flags, then FLYWHEEL_API_URL / FLYWHEEL_API_KEY, then the demo tenant."""
    settings = get_settings()
    url = api or os.environ.get("FLYWHEEL_API_URL") or f"http://127.0.0.1:{settings.api_port}"
    key = key or os.environ.get("FLYWHEEL_API_KEY")
    demo = settings.data_dir / "demo.json"
    if not key and demo.exists():
        key = json.loads(demo.read_text()).get("api_key")
    if not key:
        raise ValueError("no API key: pass --key, set FLYWHEEL_API_KEY, or run `flywheel dev` first")
    return url.rstrip("/"), key


TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text")   # stored as articles by the CLI itself
UPLOAD_SUFFIXES = (".pdf", ".docx", ".html", ".htm", ".xhtml")  # uploaded: the worker extracts them
UPLOAD_WAIT_S = 300.0


@dataclass(frozen=True)
class KnowledgeFile:
    """A file to add and the name its article id derives from (its path inside the folder
    named, or its file name when it was named itself)."""

    path: Path
    name: str


def knowledge_files(paths: Iterable[str]) -> list[KnowledgeFile]:
    """Files named, and every Markdown/text file inside the folders named (hidden ones skipped)."""
    found: list[KnowledgeFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path)
                if (file.is_file() and file.suffix.lower() in TEXT_SUFFIXES
                        and not any(part.startswith(".") for part in rel.parts)):
                    found.append(KnowledgeFile(file, rel.as_posix()))
        elif path.is_file():
            found.append(KnowledgeFile(path, path.name))
        else:
            raise ValueError(f"{raw}: no such file or folder")
    return found


class AddFailed(Exception):
    """One file could not be added; the message says why."""


def _error(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code} {r.text[:300]}"
    return f"HTTP {r.status_code} {body.get('message') or body}"[:500]


def _put_article(http: httpx.Client, url: str, article_id: str, body: dict) -> dict:
    """Store the content as the article's newest version: PUT (a new version only if it
    changed), or POST with the id when the article does not exist yet."""
    for _ in range(3):
        r = http.put(f"{url}/v1/knowledge/articles/{article_id}", json=body)
        if r.status_code == 404:
            r = http.post(f"{url}/v1/knowledge/articles", json={"id": article_id, **body})
            if r.status_code == 409:  # created meanwhile: PUT again
                continue
        if r.status_code not in (200, 201):
            raise AddFailed(_error(r))
        return r.json()
    raise AddFailed(f"article {article_id} keeps changing concurrently; try again")


def _read_text(item: KnowledgeFile) -> tuple[str, dict]:
    """(article id, {title, body, url[, questions, handoff]}) of a Markdown/text file, extracted
    like an upload (front matter `questions`: the article's example questions; `handoff: true`:
    a hand-off article)."""
    from knowledge.errors import KnowledgeError
    from knowledge.extract import extract

    try:
        got = extract(item.path.name, item.path.read_bytes())
    except KnowledgeError as err:
        raise AddFailed(err.message) from None
    body = {"title": got.title[:500], "body": got.text, "url": got.url}
    if got.questions:
        body["questions"] = list(got.questions)
    if got.handoff:
        body["handoff"] = True
    return got.article_id or path_article_id(item.name), body


def _add_text(http: httpx.Client, url: str, article_id: str, body: dict) -> tuple[int, str]:
    result = _put_article(http, url, article_id, body)
    state = "new" if result.get("created") and result["version"] == 1 else (
        "changed" if result.get("created") else "unchanged")
    return result["version"], state


def _add_upload(http: httpx.Client, url: str, item: KnowledgeFile, wait_s: float) -> tuple[int, str]:
    """Upload a PDF/DOCX/HTML file (the worker extracts it) and wait for its ingestion."""
    files = [("file", (item.path.name, item.path.read_bytes(), None))]
    r = http.post(f"{url}/v1/knowledge/files", files=files)
    if r.status_code != 202:
        raise AddFailed(_error(r))
    source_id = r.json()["source_id"]
    deadline = time.monotonic() + wait_s
    while True:
        r = http.get(f"{url}/v1/knowledge/sources/{source_id}")
        if r.status_code != 200:
            raise AddFailed(_error(r))
        source = r.json()
        if source["status"] == "failed":
            raise AddFailed(source.get("error") or "ingestion failed")
        if source["status"] == "succeeded":
            break
        if time.monotonic() > deadline:
            raise AddFailed(f"still {source['status']} after {wait_s:g} s (source {source_id}; is a worker "
                            "running?); it completes in the background")
        time.sleep(0.5)
    article_id = file_article_id(item.path.name)
    r = http.get(f"{url}/v1/knowledge/articles/{article_id}")
    if r.status_code != 200:
        raise AddFailed(_error(r))
    article = r.json()
    changed = (source.get("progress") or {}).get("articles_changed", 0)
    state = "unchanged" if not changed else "new" if article["version"] == 1 else "changed"
    return article["version"], state


def knowledge_add(paths: list[str], api: str | None, key: str | None, out: TextIO = sys.stdout,
                  wait_s: float = UPLOAD_WAIT_S) -> int:
    """Add each file as one article: Markdown/text through the articles API (front matter read
    and stripped; the id from front matter `id`, else from the path, so adding the same files
    again versions the same articles, only when they changed), PDF/DOCX/HTML through the upload
    route. Returns 1 when a file failed, else 0."""
    url, key = api_defaults(api, key)
    items = knowledge_files(paths)
    failed = 0
    used: dict[str, Path] = {}
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
        for item in items:
            suffix = item.path.suffix.lower()
            try:
                if suffix in UPLOAD_SUFFIXES:
                    article_id, body = file_article_id(item.path.name), None
                elif suffix in TEXT_SUFFIXES:
                    article_id, body = _read_text(item)
                else:
                    raise AddFailed(f"not a supported file type ({suffix or 'no extension'}): add Markdown, "
                                    "text, PDF, DOCX or HTML files")
                if article_id in used:
                    raise AddFailed(f"article {article_id} is also the article of {used[article_id]} in this "
                                    "run (give the files different names or front matter ids)")
                used[article_id] = item.path
                if body is None:
                    version, state = _add_upload(http, url, item, wait_s)
                else:
                    version, state = _add_text(http, url, article_id, body)
                print(f"{item.path}: article {article_id} version {version} ({state})", file=out)
            except (AddFailed, OSError) as err:
                failed += 1
                print(f"{item.path}: failed: {err}", file=out)
    return 1 if failed else 0


def chat(api: str | None, key: str | None, thread: str | None, email: str | None,
         inp: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """A terminal chat: each line you type is a customer message; replies show their sources."""
    url, key = api_defaults(api, key)
    thread = thread or f"cli-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {key}"}
    customer = {"email": email} if email else None
    print(f"conversation {thread} (Ctrl-D to leave)", file=out)
    with httpx.Client(timeout=120) as http:
        for line in inp:
            text = line.strip()
            if not text:
                continue
            body = {"text": text, **({"customer": customer} if customer else {})}
            r = http.post(f"{url}/v1/conversations/{thread}/messages", json=body, headers=headers)
            if r.status_code != 200:
                print(f"! {r.status_code} {r.text[:300]}", file=out)
                continue
            turn = r.json()
            reply = turn["reply"]
            if reply["text"]:
                print(f"bot> {reply['text']}", file=out)
            for n, c in enumerate(reply.get("citations") or [], 1):
                print(f"     [{n}] {c.get('title')} {c.get('url') or ''}".rstrip(), file=out)
            if turn["status"] != "open":
                print(f"     ({turn['status'].replace('_', ' ')})", file=out)
            out.flush()
    return 0
