"""Knowledge base end to end: real Temporal dev server, the API over HTTP, one worker subprocess
(it alone loads the embedding model and opens the index), a loopback help-center site (with a
deliberately slow section), an "internal" loopback service the crawler must never reach.

One API + worker per database backend for the whole module (the model loads once)."""
from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy import create_engine, text
from tests_e2e_helpers import WorkerProcess

from api.app import create_app
from db.engine import make_engine, normalize_url, session_scope
from db.knowledge import create_source
from db.tenants import create_tenant
from demo.server import ThreadedServer
from runtime.devserver import free_port
from settings import Settings

POSTGRES_URL = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
MAX_UPLOAD = 300_000
SLOW_PAGES = 15
SLOW_S = 0.4
SITE_HITS: Counter[str] = Counter()


# ---- a small help center -----------------------------------------------------------------

def help_site(pages: dict[str, tuple[str, str]]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def count(request, call_next):  # type: ignore[no-untyped-def]
        SITE_HITS[request.url.path] += 1
        return await call_next(request)

    @app.get("/slow/", response_class=HTMLResponse)
    async def slow_home() -> str:
        links = "".join(f"<li><a href='/slow/{n}'>Slow article {n}</a></li>" for n in range(SLOW_PAGES))
        return f"<title>Slow help</title><main><h1>Slow help</h1><p>Articles of the slow section.</p><ul>{links}</ul></main>"

    @app.get("/slow/{n}", response_class=HTMLResponse)
    async def slow_page(n: int) -> str:
        await asyncio.sleep(SLOW_S)
        return f"<title>Slow article {n}</title><main><h1>Slow article {n}</h1><p>Topic number {n} explained.</p></main>"

    @app.get("/nul", response_class=HTMLResponse)
    def nul_page() -> str:
        return "<title>Null\x00 bytes</title><main><p>Cleaning\x00 instructions for the kettle.</p></main>"

    def layout(title: str, body: str) -> str:
        return (f"<!doctype html><html><head><title>{title}</title></head><body>"
                f"<nav><a href='/'>Home</a></nav><main><h1>{title}</h1>{body}</main></body></html>")

    @app.get("/robots.txt", response_class=PlainTextResponse)
    def robots() -> str:
        return "User-agent: *\nAllow: /\n"

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        links = "".join(f"<li><a href='/articles/{slug}'>{title}</a></li>" for slug, (title, _) in pages.items())
        return layout("Help Center", f"<p>Browse our help articles below.</p><ul>{links}</ul>")

    @app.get("/articles/{slug}", response_class=HTMLResponse)
    def article(slug: str) -> HTMLResponse:
        if slug not in pages:
            return HTMLResponse("not found", status_code=404)
        title, body = pages[slug]
        return HTMLResponse(layout(title, f"<p>{body}</p>"))

    return app


# ---- files -------------------------------------------------------------------------------

def make_docx(paragraphs: list[str], bomb: bool = False) -> bytes:
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    if bomb:  # ~40 MB of spaces deflate to ~40 kB
        body += "<w:p><w:r><w:t>" + " " * 40_000_000 + "</w:t></w:r></w:p>"
    doc = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
           '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
           f"<w:body>{body}</w:body></w:document>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml",
                   ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
                    'package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>'))
        z.writestr("word/document.xml", doc)
    return buf.getvalue()


def make_pdf(lines: list[str]) -> bytes:
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            ("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
             "/Resources << /Font << /F1 5 0 R >> >> >>"),
            f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


# ---- the environment -----------------------------------------------------------------------

class KnowledgeWorker(WorkerProcess):
    def env(self) -> dict[str, str]:
        s = self.settings
        return {**super().env(), "FLYWHEEL_CRAWL_ALLOWED_HOSTS": s.crawl_allowed_hosts,
                "FLYWHEEL_MAX_UPLOAD_BYTES": str(s.max_upload_bytes)}


@pytest.fixture(scope="module", params=BACKENDS)
def kb_database(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path_factory.mktemp('kbdb') / 'flywheel.db').as_posix()}"
        return
    base, schema = normalize_url(POSTGRES_URL), f"fw_kb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, dict]]:
    pages = {
        "returns": ("Returning an item", "You can return any item within 45 days for a full refund."),
        "shipping": ("Shipping times", "Standard shipping takes 4 business days in the continental zone."),
        "loyalty": ("Loyalty points", "Every purchase earns loyalty points, redeemable as store credit."),
    }
    with ThreadedServer(help_site(pages)) as server:
        yield server.url, pages


@pytest.fixture(scope="module")
def kb(kb_database, site, dev_server, tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("kb")
    settings = Settings(
        data_dir=tmp, database_url=kb_database, temporal_address=dev_server.address,
        task_queue=f"kb-{uuid.uuid4().hex[:8]}", api_port=free_port(), secret_keys=Fernet.generate_key().decode(),
        link_secret=uuid.uuid4().hex, crawl_allowed_hosts=site[0].split("://")[1], max_upload_bytes=MAX_UPLOAD)
    worker = KnowledgeWorker(settings, tmp / "worker.log").start()
    engine = make_engine(settings.resolved_database_url())
    try:
        with ThreadedServer(create_app(settings), port=settings.api_port) as api:
            yield {"api": api.url, "settings": settings, "engine": engine, "worker": worker}
    finally:
        worker.kill()
        engine.dispose()


def new_tenant(kb: dict) -> dict:
    with session_scope(kb["engine"]) as session:
        row, key = create_tenant(session, f"kb-{uuid.uuid4().hex[:8]}")
    return {"id": row.id, "headers": {"Authorization": f"Bearer {key}"}}


@pytest.fixture
def tenant_a(kb) -> dict:
    return new_tenant(kb)


# ---- helpers -------------------------------------------------------------------------------

def call(kb: dict, ten: dict, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{kb['api']}/v1/knowledge{path}", headers=ten["headers"], timeout=120, **kw)


def search(kb: dict, ten: dict, q: str) -> list[dict]:
    r = call(kb, ten, "GET", "/search", params={"q": q})
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def wait_source(kb: dict, ten: dict, source_id: str, timeout: float = 90, **want) -> dict:
    deadline, seen = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        r = call(kb, ten, "GET", f"/sources/{source_id}")
        assert r.status_code == 200, r.text
        seen = r.json()
        if seen["status"] in ("succeeded", "failed", "deleted") and all(
                seen["progress"].get(k) == v for k, v in want.get("progress", {}).items()):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"source {source_id} did not finish; last: {seen}\n"
                         + kb["worker"].log.read_text(errors="replace")[-3000:])


# ---- tests -----------------------------------------------------------------------------------

def test_article_versions_and_retrieval_follow_every_change(kb, tenant_a):
    r = call(kb, tenant_a, "POST", "/articles", json={
        "title": "Warranty policy", "body": "# Coverage\n\nOur blenders carry a warranty of 18 months."})
    assert r.status_code == 201, r.text
    created = r.json()
    aid = created["id"]
    assert aid.startswith("warranty-policy-") and created["version"] == 1 and created["indexed"]
    hits = search(kb, tenant_a, "how long is the blender warranty?")
    assert hits[0]["article_id"] == aid and "18 months" in hits[0]["text"] and hits[0]["version"] == 1

    r = call(kb, tenant_a, "PUT", f"/articles/{aid}", json={
        "title": "Warranty policy", "body": "# Coverage\n\nOur blenders carry a warranty of 36 months."})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["created"], r.text
    same = call(kb, tenant_a, "PUT", f"/articles/{aid}", json={
        "title": "Warranty policy", "body": "# Coverage\n\nOur blenders carry a warranty of 36 months."})
    assert same.status_code == 200 and same.json()["version"] == 2 and not same.json()["created"]
    hit = search(kb, tenant_a, "blender warranty length")[0]
    assert (hit["version"], "36 months" in hit["text"]) == (2, True)

    diff = call(kb, tenant_a, "GET", f"/articles/{aid}/diff", params={"from": 1, "to": 2}).json()
    assert "-Our blenders carry a warranty of 18 months." in diff["diff"]
    assert "+Our blenders carry a warranty of 36 months." in diff["diff"]

    back = call(kb, tenant_a, "POST", f"/articles/{aid}/rollback", json={"version": 1})
    assert back.status_code == 200 and back.json()["version"] == 3, back.text
    assert call(kb, tenant_a, "GET", f"/articles/{aid}").json()["body"].endswith("18 months.")
    hit = search(kb, tenant_a, "blender warranty length")[0]
    assert (hit["version"], "18 months" in hit["text"]) == (3, True)

    gone = call(kb, tenant_a, "DELETE", f"/articles/{aid}")
    assert gone.status_code == 200 and gone.json()["deleted"] and gone.json()["version"] == 4
    assert call(kb, tenant_a, "GET", f"/articles/{aid}").status_code == 404
    assert all(h["article_id"] != aid for h in search(kb, tenant_a, "blender warranty"))
    versions = call(kb, tenant_a, "GET", f"/articles/{aid}/versions").json()
    assert [(v["version"], v["deleted"]) for v in versions] == [(1, False), (2, False), (3, False), (4, True)]
    assert call(kb, tenant_a, "GET", f"/articles/{aid}/versions/2").json()["body"].endswith("36 months.")
    assert call(kb, tenant_a, "GET", "/articles").json() == []

    own = call(kb, tenant_a, "POST", "/articles", json={"id": "gift-cards", "title": "Gift cards", "body": "x"})
    assert own.status_code == 201 and own.json()["id"] == "gift-cards"
    assert call(kb, tenant_a, "POST", "/articles", json={"id": "gift-cards", "title": "G", "body": "y"}).status_code == 409
    assert call(kb, tenant_a, "PUT", "/articles/nope", json={"title": "a", "body": "b"}).status_code == 404


def test_crawl_a_help_center_then_recrawl_after_one_page_changed(kb, tenant_a, site):
    url, pages = site
    r = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/", "max_pages": 10})
    assert r.status_code == 202, r.text
    first = r.json()
    assert first["workflow_id"] == f"ingest/{tenant_a['id']}/{first['source_id']}"
    done = wait_source(kb, tenant_a, first["source_id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["pages_seen"] == 4  # home + 3 articles
    assert done["progress"]["pages_indexed"] == 4 and done["progress"]["articles_changed"] == 4
    hits = search(kb, tenant_a, "how many days do I have to return an item?")
    assert hits[0]["url"] == f"{url}/articles/returns" and "45 days" in hits[0]["text"]
    articles = {a["url"]: a for a in call(kb, tenant_a, "GET", "/articles").json()}
    assert len(articles) == 4 and all(a["version"] == 1 and a["indexed"] for a in articles.values())

    pages["shipping"] = ("Shipping times", "Standard shipping now takes 2 business days in the continental zone.")
    try:
        second = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/"}).json()
        again = wait_source(kb, tenant_a, second["source_id"])
        assert again["status"] == "succeeded" and again["progress"]["articles_changed"] == 1, again
        after = {a["url"]: a["version"] for a in call(kb, tenant_a, "GET", "/articles").json()}
        assert after == {u: (2 if u.endswith("/shipping") else 1) for u in articles}
        hit = search(kb, tenant_a, "how long does standard shipping take")[0]
        assert hit["url"].endswith("/shipping") and "2 business days" in hit["text"] and hit["version"] == 2
        listed = call(kb, tenant_a, "GET", "/sources").json()
        assert [s["source_id"] for s in listed] == [second["source_id"], first["source_id"]]
    finally:
        pages["shipping"] = ("Shipping times", "Standard shipping takes 4 business days in the continental zone.")


def test_scheduled_resync_continues_as_new_and_retires_vanished_pages(kb, tenant_a, site):
    from temporalio.client import Client

    from workflows import ingest as W

    url, pages = site
    with session_scope(kb["engine"]) as session:  # the API refuses intervals under a minute
        src = create_source(session, tenant_a["id"], "url", url=f"{url}/", max_pages=10, resync_every_s=1)

    async def start() -> None:
        client = await Client.connect(kb["settings"].temporal_address)
        await client.start_workflow(
            W.INGEST_WORKFLOW, W.IngestInput(tenant_id=tenant_a["id"], source_id=src.source_id, type="url",
                                             url=src.url, max_pages=10, max_depth=3, resync_every_s=1),
            id=src.workflow_id, task_queue=kb["settings"].task_queue)

    async def stop() -> None:
        client = await Client.connect(kb["settings"].temporal_address)
        await client.get_workflow_handle(src.workflow_id).terminate("test over")

    asyncio.run(start())
    loyalty_url, removed = f"{url}/articles/loyalty", None

    def live_urls() -> dict[str, str]:
        return {a["url"]: a["id"] for a in call(kb, tenant_a, "GET", "/articles").json()}

    def wait(predicate, what: str) -> None:
        deadline = time.monotonic() + 90
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.3)

    try:
        wait(lambda: loyalty_url in live_urls(), "the first cycle")
        loyalty_id = live_urls()[loyalty_url]
        removed = pages.pop("loyalty")
        wait(lambda: loyalty_url not in live_urls(), "a later cycle to retire the vanished page")
        view = call(kb, tenant_a, "GET", f"/sources/{src.source_id}").json()
        assert view["progress"]["cycle"] >= 2, view
        versions = call(kb, tenant_a, "GET", f"/articles/{loyalty_id}/versions").json()
        assert versions[-1]["deleted"] and versions[-1]["note"] == "page no longer on the site"
        assert f"{url}/articles/returns" in live_urls()
        wait(lambda: all(h["url"] != loyalty_url for h in search(kb, tenant_a, "loyalty points store credit")),
             "the vanished page to leave the index")
    finally:
        if removed is not None:
            pages["loyalty"] = removed
        asyncio.run(stop())


def test_uploaded_files_become_searchable_articles(kb, tenant_a):
    files = [
        ("file", ("returns.md", b"# Return labels\n\nPrint the prepaid return label from your account page.",
                  "text/markdown")),
        ("file", ("hours.html", (b"<html><head><title>Opening hours</title></head><body><main><h1>Opening hours"
                                 b"</h1><p>Our phone line is open from 8am to 6pm on weekdays.</p></main></body></html>"),
                  "text/html")),
        ("file", ("warranty.docx", make_docx(["Warranty", "The espresso machine warranty lasts three years."]),
                  "application/vnd.openxmlformats-officedocument.wordprocessingml.document")),
        ("file", ("giftcards.pdf", make_pdf(["Gift cards never expire.", "They can be used online and in stores."]),
                  "application/pdf")),
    ]
    r = call(kb, tenant_a, "POST", "/files", files=files)
    assert r.status_code == 202, r.text
    done = wait_source(kb, tenant_a, r.json()["source_id"])
    assert done["status"] == "succeeded" and done["progress"]["pages_indexed"] == 4, done
    assert done["files"] == ["returns.md", "hours.html", "warranty.docx", "giftcards.pdf"]
    for question, expected in [("where do I print a return label", "prepaid return label"),
                               ("when is the phone line open", "8am to 6pm"),
                               ("how long is the espresso machine warranty", "three years"),
                               ("do gift cards expire", "never expire")]:
        hit = search(kb, tenant_a, question)[0]
        assert expected in hit["text"], (question, hit)


def test_hostile_or_oversized_uploads_change_nothing(kb, tenant_a):
    bomb = make_docx(["Bomb"], bomb=True)
    assert len(bomb) < MAX_UPLOAD
    r = call(kb, tenant_a, "POST", "/files", files=[
        ("file", ("fine.md", b"# Fine\n\nZebra stripes are unique to every zebra.", "text/markdown")),
        ("file", ("bomb.docx", bomb, "application/octet-stream"))])
    assert r.status_code == 202, r.text
    failed = wait_source(kb, tenant_a, r.json()["source_id"])
    assert failed["status"] == "failed" and "bomb.docx" in failed["error"] and "zip bomb" in failed["error"]
    assert call(kb, tenant_a, "GET", "/articles").json() == []
    assert search(kb, tenant_a, "zebra stripes") == []

    big = call(kb, tenant_a, "POST", "/files", files=[("file", ("big.md", b"a" * (MAX_UPLOAD + 1), "text/markdown"))])
    assert big.status_code == 413 and big.json()["error"] == "too_large"
    odd = call(kb, tenant_a, "POST", "/files", files=[("file", ("tool.exe", b"MZ\x90\x00", "application/x-msdownload"))])
    assert odd.status_code == 415, odd.text
    assert [s["source_id"] for s in call(kb, tenant_a, "GET", "/sources").json()] == [r.json()["source_id"]]
    bad = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": "http://127.0.0.1:1/", "max_pages": 501})
    assert bad.status_code == 422


def test_tenants_never_see_each_others_articles(kb, tenant_a):
    tenant_b = new_tenant(kb)
    r = call(kb, tenant_a, "POST", "/articles", json={
        "id": "secret-recipe", "title": "Secret sauce recipe", "body": "The sauce uses smoked paprika and honey."})
    assert r.status_code == 201 and r.json()["indexed"], r.text
    assert search(kb, tenant_a, "smoked paprika sauce")[0]["article_id"] == "secret-recipe"
    assert search(kb, tenant_b, "smoked paprika sauce") == []
    assert call(kb, tenant_b, "GET", "/articles/secret-recipe").status_code == 404
    assert call(kb, tenant_b, "DELETE", "/articles/secret-recipe").status_code == 404
    assert call(kb, tenant_b, "GET", "/articles").json() == []
    assert httpx.get(f"{kb['api']}/v1/knowledge/search", params={"q": "x"}, timeout=10).status_code == 401


def test_tenant_allowed_hosts_never_open_the_crawler(kb, tenant_a):
    hits: Counter[str] = Counter()
    internal = FastAPI()

    @internal.get("/{path:path}", response_class=HTMLResponse)
    def anything(path: str) -> str:
        hits[path] += 1
        return "<title>Internal admin</title><p>internal secret</p>"

    with ThreadedServer(internal) as server:
        host = server.url.split("://")[1]
        settings_url = f"{kb['api']}/v1/tenant/settings"
        ok = httpx.patch(settings_url, json={"allowed_hosts": [host]}, headers=tenant_a["headers"], timeout=10)
        assert ok.status_code == 200, ok.text  # fine for its own connectors...
        for metadata in ("169.254.169.254", "[fd00:ec2::254]:80"):
            bad = httpx.patch(settings_url, json={"allowed_hosts": [metadata]}, headers=tenant_a["headers"], timeout=10)
            assert bad.status_code == 422 and "never reachable" in bad.text, bad.text
        r = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{server.url}/admin"})
        assert r.status_code == 202, r.text
        done = wait_source(kb, tenant_a, r.json()["source_id"])
    assert done["status"] == "failed", done  # ...but the crawler only obeys the operator's setting
    assert "blocked request to internal address" in done["error"] and "loopback" in done["error"]
    assert sum(hits.values()) == 0
    assert call(kb, tenant_a, "GET", "/articles").json() == []


def test_progress_is_visible_while_a_slow_crawl_runs(kb, tenant_a, site):
    url, _ = site
    r = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/slow/", "max_pages": 20})
    assert r.status_code == 202, r.text
    source_id = r.json()["source_id"]
    seen: list[dict] = []
    listed: list[dict] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        view = call(kb, tenant_a, "GET", f"/sources/{source_id}").json()
        seen.append(view)
        listed += [s for s in call(kb, tenant_a, "GET", "/sources").json() if s["source_id"] == source_id]
        if view["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    final = seen[-1]
    assert final["status"] == "succeeded", final
    assert final["progress"]["pages_seen"] == SLOW_PAGES + 1 and final["progress"]["pages_indexed"] == SLOW_PAGES + 1
    assert final["progress"]["pages_fetched"] == SLOW_PAGES + 1
    during = [v for v in seen if v["status"] == "running" and v["progress"].get("phase") == "crawling"
              and 0 < v["progress"].get("pages_seen", 0) < SLOW_PAGES + 1]
    assert len(during) >= 2, [v["progress"] for v in seen]  # the count moves while the crawl runs
    counts = [v["progress"]["pages_seen"] for v in during]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert any(s["status"] == "running" and 0 < s["progress"].get("pages_seen", 0) < SLOW_PAGES + 1
               for s in listed)  # the list shows it too


def test_deleting_a_source_stops_its_resync_and_retires_its_articles(kb, tenant_a, site):
    from temporalio.client import Client, WorkflowExecutionStatus

    url, pages = site
    r = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/", "max_pages": 10,
                                                      "resync_every": "1h"})
    assert r.status_code == 202, r.text
    src = r.json()
    done = wait_source(kb, tenant_a, src["source_id"])
    deadline = time.monotonic() + 30
    while not done["progress"].get("next_sync_at"):  # recorded right after "succeeded"
        assert done["status"] == "succeeded" and time.monotonic() < deadline, done
        time.sleep(0.2)
        done = call(kb, tenant_a, "GET", f"/sources/{src['source_id']}").json()
    articles = call(kb, tenant_a, "GET", "/articles", params={"source_id": src["source_id"]}).json()
    assert len(articles) == 4
    returns = next(a for a in articles if a["url"].endswith("/returns"))
    assert search(kb, tenant_a, "how many days do I have to return an item?")[0]["article_id"] == returns["id"]
    manual = call(kb, tenant_a, "POST", "/articles", json={"id": "manual", "title": "Manual", "body": "Kept."})
    assert manual.status_code == 201

    gone = call(kb, tenant_a, "DELETE", f"/sources/{src['source_id']}")
    assert gone.status_code == 200 and gone.json()["status"] == "deleted", gone.text
    assert gone.json()["progress"]["articles_changed"] == 4

    async def describe() -> WorkflowExecutionStatus:
        client = await Client.connect(kb["settings"].temporal_address)
        return (await client.get_workflow_handle(src["workflow_id"]).describe()).status

    assert asyncio.run(describe()) == WorkflowExecutionStatus.COMPLETED  # no re-sync waiting any more
    assert [a["id"] for a in call(kb, tenant_a, "GET", "/articles").json()] == ["manual"]
    versions = call(kb, tenant_a, "GET", f"/articles/{returns['id']}/versions").json()
    assert [(v["version"], v["deleted"]) for v in versions] == [(1, False), (2, True)]
    assert versions[-1]["note"] == f"source {src['source_id']} deleted"
    assert all(h["article_id"] != returns["id"] for h in search(kb, tenant_a, "return an item within days"))
    assert call(kb, tenant_a, "GET", "/sources").json() == []
    assert [s["status"] for s in call(kb, tenant_a, "GET", "/sources", params={"include_deleted": "true"}).json()
            ] == ["deleted"]
    assert call(kb, tenant_a, "GET", f"/sources/{src['source_id']}").json()["status"] == "deleted"
    again = call(kb, tenant_a, "DELETE", f"/sources/{src['source_id']}")
    assert again.status_code == 200 and again.json()["status"] == "deleted"

    back = call(kb, tenant_a, "POST", f"/articles/{returns['id']}/rollback", json={"version": 1})
    assert back.status_code == 200 and back.json()["version"] == 3 and back.json()["indexed"], back.text
    assert search(kb, tenant_a, "how many days do I have to return an item?")[0]["article_id"] == returns["id"]

    assert call(kb, tenant_a, "DELETE", "/sources/src-nope").status_code == 404
    other = new_tenant(kb)
    assert call(kb, other, "DELETE", f"/sources/{src['source_id']}").status_code == 404


def test_deleting_a_source_while_it_crawls_stops_the_crawl(kb, tenant_a, site):
    url, _ = site
    SITE_HITS.clear()
    r = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/slow/", "max_pages": 20})
    source_id = r.json()["source_id"]
    deadline = time.monotonic() + 60
    while call(kb, tenant_a, "GET", f"/sources/{source_id}").json()["progress"].get("pages_seen", 0) < 2:
        assert time.monotonic() < deadline, "the crawl did not start"
        time.sleep(0.1)
    gone = call(kb, tenant_a, "DELETE", f"/sources/{source_id}")
    assert gone.status_code == 200 and gone.json()["status"] == "deleted", gone.text
    fetched = sum(n for path, n in SITE_HITS.items() if path.startswith("/slow/") and path != "/slow/")
    assert fetched < SLOW_PAGES  # stopped early
    time.sleep(2 * SLOW_S)
    assert sum(n for path, n in SITE_HITS.items() if path.startswith("/slow/") and path != "/slow/") == fetched
    stored = call(kb, tenant_a, "GET", "/articles", params={"source_id": source_id}).json()
    assert stored == [] and call(kb, tenant_a, "GET", "/articles").json() == []


def test_nul_characters_never_break_storage(kb, tenant_a, site):
    url, _ = site
    r = call(kb, tenant_a, "POST", "/articles", json={"id": "kettle", "title": "Kettle\u0000 care",
                                                       "body": "Descale\u0000 monthly."})
    assert r.status_code == 201, r.text
    body = call(kb, tenant_a, "GET", "/articles/kettle").json()
    assert (body["title"], body["body"]) == ("Kettle care", "Descale monthly.")
    same = call(kb, tenant_a, "PUT", "/articles/kettle", json={"title": "Kettle care\u0000", "body": "Descale monthly."})
    assert same.status_code == 200 and not same.json()["created"]
    assert call(kb, tenant_a, "POST", "/articles", json={"title": "\u0000", "body": "x"}).status_code == 422
    assert call(kb, tenant_a, "POST", "/articles", json={"title": "T", "body": "x",
                                                          "url": "https://h/\u0000"}).status_code == 422
    assert call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": "https://h/\u0000x"}).status_code == 422
    for path in ("/articles/a%00b", "/articles/a%00b/versions", "/sources/src%00x"):
        assert call(kb, tenant_a, "GET", path).status_code == 404, path
    assert call(kb, tenant_a, "GET", "/articles", params={"source_id": "a\x00b"}).json() == []

    text = b"# Descaling\n\nUse\x00 citric acid once a month." + b" Rinse well afterwards." * 60
    multipart = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="desc\x00aling.md"\r\n'
                 b"Content-Type: text/markdown\r\n\r\n" + text + b"\r\n--b0undary--\r\n")  # a raw NUL in the name
    up = httpx.post(f"{kb['api']}/v1/knowledge/files", content=multipart, timeout=60,
                    headers={**tenant_a["headers"], "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert up.status_code == 202, up.text
    done = wait_source(kb, tenant_a, up.json()["source_id"])
    assert done["status"] == "succeeded" and done["files"] == ["descaling.md"], done

    crawl = call(kb, tenant_a, "POST", "/sources", json={"type": "url", "url": f"{url}/nul", "max_depth": 0})
    done = wait_source(kb, tenant_a, crawl.json()["source_id"])
    assert done["status"] == "succeeded", done
    page = next(a for a in call(kb, tenant_a, "GET", "/articles").json() if a["url"] == f"{url}/nul")
    assert call(kb, tenant_a, "GET", f"/articles/{page['id']}").json()["body"] == "Cleaning instructions for the kettle."
    assert page["title"] == "Null bytes"
    assert search(kb, tenant_a, "citric acid descaling")[0]["text"].count("\x00") == 0


def test_uploaded_markdown_front_matter_sets_id_title_and_url(kb, tenant_a):
    md = b"---\nid: returns-policy\ntitle: Returns policy\nurl: https://help.example.com/returns\n---\n" \
         b"Returns are free within 60 days of delivery.\n"
    r = call(kb, tenant_a, "POST", "/files", files=[("file", ("returns.md", md, "text/markdown"))])
    done = wait_source(kb, tenant_a, r.json()["source_id"])
    assert done["status"] == "succeeded", done
    article = call(kb, tenant_a, "GET", "/articles/returns-policy").json()
    assert (article["title"], article["url"], article["body"]) == (
        "Returns policy", "https://help.example.com/returns", "Returns are free within 60 days of delivery.")
    bad = call(kb, tenant_a, "POST", "/files", files=[("file", ("x.md", b"---\nid: Not Valid!\n---\nBody", "text/markdown"))])
    failed = wait_source(kb, tenant_a, bad.json()["source_id"])
    assert failed["status"] == "failed" and "front matter id" in failed["error"], failed


LOYALTY = ("## Earning points\n\nEvery purchase earns one point per euro spent. 100 points are worth 5 euros "
           "of store credit.\n\n## Using points\n\nPoints are redeemed at checkout and expire after two years "
           "without a purchase.")
LOYALTY_QUESTIONS = ["Do I get rewards for shopping with you regularly?",
                     "what's in it for me if I keep ordering from you"]
REWARD_QUERY = "Is there some reward when I buy from you a lot?"


def test_example_questions_route_search_and_are_versioned(kb, tenant_a):
    r = call(kb, tenant_a, "POST", "/articles", json={
        "id": "returns", "title": "Returns", "body": "## Window\n\nUnworn shoes can be sent back within 45 days."})
    assert r.status_code == 201 and r.json()["indexed"], r.text
    r = call(kb, tenant_a, "POST", "/articles", json={
        "id": "loyalty", "title": "Loyalty programme", "body": LOYALTY, "questions": LOYALTY_QUESTIONS})
    assert r.status_code == 201 and r.json()["indexed"] and r.json()["version"] == 1, r.text
    assert call(kb, tenant_a, "GET", "/articles/loyalty").json()["questions"] == LOYALTY_QUESTIONS
    top = search(kb, tenant_a, REWARD_QUERY)[0]
    assert top["article_id"] == "loyalty" and top["question_score"] > 0.6, top
    assert "points" in top["text"] and not any(q in top["text"] for q in LOYALTY_QUESTIONS)
    routed = top["score"]

    same = call(kb, tenant_a, "PUT", "/articles/loyalty", json={
        "title": "Loyalty programme", "body": LOYALTY, "questions": LOYALTY_QUESTIONS})
    assert same.status_code == 200 and not same.json()["created"] and same.json()["version"] == 1
    fewer = call(kb, tenant_a, "PUT", "/articles/loyalty", json={
        "title": "Loyalty programme", "body": LOYALTY, "questions": LOYALTY_QUESTIONS[1:]})
    assert fewer.status_code == 200 and fewer.json()["created"] and fewer.json()["version"] == 2, fewer.text
    diff = call(kb, tenant_a, "GET", "/articles/loyalty/diff", params={"from": 1, "to": 2}).json()
    assert diff["questions_changed"] and not diff["title_changed"]
    assert f"-Question: {LOYALTY_QUESTIONS[0]}" in diff["diff"]

    plain = call(kb, tenant_a, "PUT", "/articles/loyalty", json={"title": "Loyalty programme", "body": LOYALTY})
    assert plain.json()["version"] == 3 and plain.json()["indexed"], plain.text  # omitted: none
    assert call(kb, tenant_a, "GET", "/articles/loyalty").json()["questions"] == []
    unrouted = next(h for h in search(kb, tenant_a, REWARD_QUERY) if h["article_id"] == "loyalty")
    assert unrouted["question_score"] == 0.0 and unrouted["score"] < routed - 0.05

    back = call(kb, tenant_a, "POST", "/articles/loyalty/rollback", json={"version": 1})
    assert back.json()["version"] == 4 and back.json()["indexed"], back.text
    assert call(kb, tenant_a, "GET", "/articles/loyalty/versions/4").json()["questions"] == LOYALTY_QUESTIONS
    top = search(kb, tenant_a, REWARD_QUERY)[0]
    assert (top["article_id"], top["version"]) == ("loyalty", 4) and top["score"] == pytest.approx(routed)

    # bad questions: a clear 422, nothing stored
    for questions, message in [([f"q{n}" for n in range(21)], "at most 20 example questions"),
                               (["ok", "   "], "question 2 is empty"),
                               (["x" * 301], "question 1 is 301 characters long")]:
        bad = call(kb, tenant_a, "POST", "/articles", json={"id": "new", "title": "N", "body": "b",
                                                            "questions": questions})
        assert bad.status_code == 422 and message in bad.json()["message"], bad.text
        bad = call(kb, tenant_a, "PUT", "/articles/loyalty", json={"title": "L", "body": "b", "questions": questions})
        assert bad.status_code == 422 and message in bad.json()["message"], bad.text
    for questions in ["one text", [1, 2], {"a": "b"}]:
        bad = call(kb, tenant_a, "POST", "/articles", json={"id": "new", "title": "N", "body": "b",
                                                            "questions": questions})
        assert bad.status_code == 422, bad.text
    assert call(kb, tenant_a, "GET", "/articles/new").status_code == 404
    assert len(call(kb, tenant_a, "GET", "/articles/loyalty/versions").json()) == 4


def test_uploaded_markdown_front_matter_questions(kb, tenant_a):
    md = ("---\nid: loyalty-upload\ntitle: Loyalty programme\nquestions:\n"
          + "".join(f'  - "{q}"\n' for q in LOYALTY_QUESTIONS) + "---\n" + LOYALTY + "\n").encode()
    r = call(kb, tenant_a, "POST", "/files", files=[("file", ("loyalty.md", md, "text/markdown"))])
    done = wait_source(kb, tenant_a, r.json()["source_id"])
    assert done["status"] == "succeeded", done
    article = call(kb, tenant_a, "GET", "/articles/loyalty-upload").json()
    assert article["questions"] == LOYALTY_QUESTIONS and "rewards" not in article["body"]
    top = search(kb, tenant_a, REWARD_QUERY)[0]
    assert top["article_id"] == "loyalty-upload" and top["question_score"] > 0.6
    bad = call(kb, tenant_a, "POST", "/files", files=[
        ("file", ("x.md", b"---\nid: other\nquestions: [" + b", ".join(b"q%d" % n for n in range(21)) + b"]\n---\nBody",
                  "text/markdown"))])
    failed = wait_source(kb, tenant_a, bad.json()["source_id"])
    assert failed["status"] == "failed" and "at most 20 example questions" in failed["error"], failed
    assert call(kb, tenant_a, "GET", "/articles/other").status_code == 404


GIFTS = ("## Buying a gift card\nGift cards are available from 10 to 500 euros, as a printed card or an "
         "e-gift card sent by email on the date you choose.\n\n## Using a gift card\nGift cards can be "
         "used in every store and online. A gift card stays valid for three years after purchase.")
BULK = "Can I get a discount if I buy lots of gift cards for my employees?"
HANDOFF = {"title": "Handed to a person", "body": "Corporate orders: the sales team answers these.",
           "handoff": True, "questions": ["Do you sell gift cards in bulk to companies, with one invoice?",
                                          "Can we order gift cards for all our employees as a corporate gift?"]}


def test_handoff_articles_are_versioned_and_never_a_hit(kb, tenant_a):
    r = call(kb, tenant_a, "POST", "/articles", json={
        "id": "gift-cards", "title": "Gift cards", "body": GIFTS, "questions": ["How long is my gift card valid?"]})
    assert r.status_code == 201 and r.json()["indexed"], r.text
    assert search(kb, tenant_a, BULK)[0]["handoff_score"] == 0.0
    # a hand-off article needs its questions: 422, nothing stored
    bad = call(kb, tenant_a, "POST", "/articles", json={**HANDOFF, "id": "corporate", "questions": []})
    assert bad.status_code == 422 and "needs questions" in bad.json()["message"], bad.text
    assert call(kb, tenant_a, "GET", "/articles/corporate").status_code == 404

    r = call(kb, tenant_a, "POST", "/articles", json={**HANDOFF, "id": "corporate"})
    assert r.status_code == 201 and r.json()["indexed"], r.text
    assert call(kb, tenant_a, "GET", "/articles/corporate").json()["handoff"] is True
    hits = search(kb, tenant_a, BULK)
    assert [h["article_id"] for h in hits] == ["gift-cards"] and hits[0]["handoff_score"] > 0.6
    assert not any("sales team" in h["text"] for h in search(kb, tenant_a, "does the sales team answer corporate orders?"))

    # turning it into a plain article is a new version (and its text becomes searchable)
    plain = call(kb, tenant_a, "PUT", "/articles/corporate", json={**HANDOFF, "handoff": False})
    assert plain.json()["created"] and plain.json()["version"] == 2 and plain.json()["indexed"], plain.text
    assert search(kb, tenant_a, BULK)[0]["handoff_score"] == 0.0
    diff = call(kb, tenant_a, "GET", "/articles/corporate/diff", params={"from": 1, "to": 2}).json()
    assert "-Hand-off article: its questions are handed to a person" in diff["diff"]
    back = call(kb, tenant_a, "POST", "/articles/corporate/rollback", json={"version": 1})
    assert back.json()["version"] == 3 and back.json()["indexed"], back.text
    assert call(kb, tenant_a, "GET", "/articles/corporate").json()["handoff"] is True
    assert search(kb, tenant_a, BULK)[0]["handoff_score"] > 0.6
    same = call(kb, tenant_a, "PUT", "/articles/corporate", json=HANDOFF)
    assert not same.json()["created"] and same.json()["version"] == 3

    # an uploaded Markdown file with `handoff: true` in its front matter is one too
    md = ("---\nid: corporate-upload\nhandoff: true\nquestions:\n"
          + "".join(f'  - "{q}"\n' for q in HANDOFF["questions"]) + "---\nTeam note.\n").encode()
    r = call(kb, tenant_a, "POST", "/files", files=[("file", ("corporate.md", md, "text/markdown"))])
    assert wait_source(kb, tenant_a, r.json()["source_id"])["status"] == "succeeded"
    assert call(kb, tenant_a, "GET", "/articles/corporate-upload").json()["handoff"] is True
