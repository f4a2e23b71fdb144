"""Crawler against real loopback sites: robots.txt, limits, sitemaps, SSRF guard on every hop,
a crawler trap, hostile pages, progress."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)

from demo.server import ThreadedServer
from knowledge.crawl import EXTRA_REQUESTS, REQUESTS_PER_PAGE, Crawler, Page, crawl
from knowledge.errors import CrawlError

SITE_HITS: Counter[str] = Counter()
OTHER_HITS: Counter[str] = Counter()


def html(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html><head><title>{title}</title></head><body>
    <nav class="menu"><a href="/">Home</a> <a href="/a">Article A</a> <a href="/b">Article B</a></nav>
    <main>{body}</main><footer>Acme footer</footer></body></html>""")


def counting_app(hits: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def count(request: Request, call_next):  # type: ignore[no-untyped-def]
        hits[request.url.path] += 1
        return await call_next(request)

    return app


def other_app() -> FastAPI:
    """An "internal" service on another loopback port: the crawler must never reach it."""
    app = counting_app(OTHER_HITS)

    @app.get("/{path:path}")
    def anything(path: str) -> HTMLResponse:
        return HTMLResponse("<title>internal</title><p>internal secret</p>")

    return app


def help_center(other_url: str) -> FastAPI:
    app = counting_app(SITE_HITS)

    @app.get("/robots.txt")
    def robots() -> PlainTextResponse:
        return PlainTextResponse("User-agent: *\nDisallow: /private/\n")

    @app.get("/")
    def home() -> HTMLResponse:
        return html("Help Center", """<h1>Welcome</h1><p>Find answers below.</p>
        <a href="/a#top">A again</a> <a href="/private/secret">Secret</a>
        <a href="http://external.example/x">External</a> <a href="http://10.0.0.1/admin">Router</a>
        <a href="mailto:help@acme.example">Mail</a> <a href="/file.pdf">PDF</a>
        <a href="/go-internal">Moved</a> <a href="/missing">Missing</a>""")

    @app.get("/a")
    def page_a() -> HTMLResponse:
        return html("Article A", '<h1>Returns</h1><p>Return within 30 days.</p><a href="/c">C</a>')

    @app.get("/b")
    def page_b() -> HTMLResponse:
        return html("Article B", '<h1>Shipping</h1><p>We ship worldwide.</p><a href="/a">A</a>')

    @app.get("/c")
    def page_c() -> HTMLResponse:
        return html("Article C", '<h1>Warranty</h1><p>Two years.</p><a href="/d">D</a>')

    @app.get("/d")
    def page_d() -> HTMLResponse:
        return html("Article D", "<h1>Contact</h1><p>Call us.</p>")

    @app.get("/private/secret")
    def secret() -> HTMLResponse:
        return html("Secret", "<p>do not crawl</p>")

    @app.get("/file.pdf")
    def pdf() -> Response:
        return Response(b"%PDF-1.4 not really", media_type="application/pdf")

    @app.get("/go-internal")
    def go_internal() -> RedirectResponse:
        return RedirectResponse(f"{other_url}/admin", status_code=302)

    @app.get("/go-private-ip")
    def go_private_ip() -> RedirectResponse:
        return RedirectResponse("http://10.0.0.1/", status_code=302)

    @app.get("/sitemap.xml")
    def sitemap(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        urls = "".join(f"<url><loc>{loc}</loc></url>" for loc in (f"{base}/b", f"{base}/d", "http://external.example/z"))
        return Response(f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/'
                        f'sitemap/0.9">{urls}</urlset>', media_type="application/xml")

    @app.get("/sitemap-index")
    def sitemap_index(request: Request) -> Response:
        return Response(f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>'
                        f'{request.base_url}sitemap.xml</loc></sitemap></sitemapindex>', media_type="text/xml")

    @app.get("/latin")
    def latin() -> Response:
        body = "<title>Caf\u00e9</title><p>Cr\u00e8me br\u00fbl\u00e9e</p>".encode("latin-1")
        return Response(body, media_type="text/html; charset=iso-8859-1")

    @app.get("/evil-sitemap.xml")
    def evil_sitemap() -> Response:
        return Response('<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                        "<urlset><url><loc>&e;</loc></url></urlset>", media_type="application/xml")

    @app.get("/bad-links")
    def bad_links() -> HTMLResponse:
        return HTMLResponse('<p>Links</p><a href="http://[oops">a</a><a href="http://x:99999/">b</a>'
                            '<a href="javascript:alert(1)">c</a><a href="/d">d</a>')

    @app.get("/links-to-hostile")
    def links_to_hostile() -> HTMLResponse:
        return HTMLResponse('<p>Two links</p><a href="/hostile">h</a><a href="/d">d</a>')

    @app.get("/hostile")
    def hostile() -> HTMLResponse:
        return HTMLResponse("<p>" + "a <b" * 8_000)  # html.parser is quadratic on this

    @app.get("/drip")
    def drip() -> StreamingResponse:
        async def forever():  # one byte every 0.2 s: never a read timeout, never done
            yield b"<p>"
            while True:
                await asyncio.sleep(0.2)
                yield b"x"
        return StreamingResponse(forever(), media_type="text/html")

    @app.get("/huge")
    def huge() -> StreamingResponse:
        chunk = b"<p>" + b"x" * (1 << 20) + b"</p>"
        return StreamingResponse(iter([chunk] * 6), media_type="text/html")

    return app


@pytest.fixture(scope="module")
def other() -> Iterator[ThreadedServer]:
    with ThreadedServer(other_app()) as server:
        yield server


@pytest.fixture(scope="module")
def site(other: ThreadedServer) -> Iterator[ThreadedServer]:
    with ThreadedServer(help_center(other.url)) as server:
        yield server


@pytest.fixture(autouse=True)
def reset_hits() -> None:
    SITE_HITS.clear()
    OTHER_HITS.clear()


def allowed(site: ThreadedServer) -> list[str]:
    return [f"127.0.0.1:{site.port}"]


def paths(pages: list[Page]) -> list[str]:
    return [urlsplit(page.url).path for page in pages]


async def test_crawl_follows_same_site_links_and_honours_robots(site: ThreadedServer) -> None:
    crawler = Crawler(site.url, allowed_hosts=allowed(site))
    pages = await crawler.run()
    assert paths(pages) == ["/", "/a", "/b", "/c", "/d"]
    assert pages[1] == Page(url=f"{site.url}/a", title="Article A",
                            text="# Returns\n\nReturn within 30 days.\n\nC")
    assert "Acme footer" not in pages[0].text and "Article B" not in pages[0].text
    assert SITE_HITS["/private/secret"] == 0  # disallowed by robots.txt: never requested
    assert SITE_HITS["/robots.txt"] == 1
    assert all(SITE_HITS[p] == 1 for p in ("/", "/a", "/b", "/c", "/d"))  # deduplicated, #top dropped
    assert SITE_HITS["/file.pdf"] == 1 and SITE_HITS["/go-internal"] == 1
    assert sum(OTHER_HITS.values()) == 0  # redirect to another port never followed
    assert crawler.skipped == Counter(robots=1, external=1, blocked=2, not_html=1, error=1)


async def test_depth_limit(site: ThreadedServer) -> None:
    pages = await crawl(site.url, max_depth=1, allowed_hosts=allowed(site))
    assert paths(pages) == ["/", "/a", "/b"]
    assert SITE_HITS["/c"] == 0


async def test_page_limit(site: ThreadedServer) -> None:
    pages = await crawl(site.url, max_pages=2, allowed_hosts=allowed(site))
    assert paths(pages) == ["/", "/a"]
    assert SITE_HITS["/b"] == 0


async def test_sitemap_input(site: ThreadedServer) -> None:
    crawler = Crawler(f"{site.url}/sitemap.xml", max_depth=0, allowed_hosts=allowed(site))
    pages = await crawler.run()
    assert paths(pages) == ["/b", "/d"]
    assert [page.title for page in pages] == ["Article B", "Article D"]
    assert crawler.skipped["external"] == 1
    assert SITE_HITS["/"] == 0 and SITE_HITS["/a"] == 0


async def test_sitemap_index_and_links_followed_from_sitemap_pages(site: ThreadedServer) -> None:
    pages = await crawl(f"{site.url}/sitemap-index", max_depth=1, allowed_hosts=allowed(site))
    assert paths(pages) == ["/b", "/d", "/", "/a"]


async def test_sitemap_with_xml_entities_refused(site: ThreadedServer) -> None:
    with pytest.raises(CrawlError, match="DTD or XML entities"):
        await crawl(f"{site.url}/evil-sitemap.xml", allowed_hosts=allowed(site))


async def test_bad_links_do_not_break_the_crawl(site: ThreadedServer) -> None:
    pages = await crawl(f"{site.url}/bad-links", max_depth=1, allowed_hosts=allowed(site))
    assert paths(pages) == ["/bad-links", "/d"]


async def test_redirect_to_other_loopback_port_refused(site: ThreadedServer, other: ThreadedServer) -> None:
    with pytest.raises(CrawlError) as info:
        await crawl(f"{site.url}/go-internal", allowed_hosts=allowed(site))
    assert "blocked request to internal address" in info.value.message
    assert f"GET {other.url}/admin refused" in info.value.message
    assert SITE_HITS["/go-internal"] == 1
    assert sum(OTHER_HITS.values()) == 0


async def test_redirect_to_private_ip_refused(site: ThreadedServer) -> None:
    with pytest.raises(CrawlError, match=r"10\.0\.0\.1.*private"):
        await crawl(f"{site.url}/go-private-ip", allowed_hosts=allowed(site))


async def test_loopback_start_url_refused_without_allowed_hosts(site: ThreadedServer) -> None:
    with pytest.raises(CrawlError) as info:
        await crawl(site.url)
    assert "loopback" in info.value.message and "allowed_hosts" in info.value.message
    assert sum(SITE_HITS.values()) == 0


async def test_start_url_must_be_http(site: ThreadedServer) -> None:
    for bad in ("file:///etc/passwd", "help.example.com", "http://x:99999/"):
        with pytest.raises(CrawlError, match="absolute http"):
            await crawl(bad)


async def test_start_url_disallowed_by_robots(site: ThreadedServer) -> None:
    with pytest.raises(CrawlError, match="robots.txt"):
        await crawl(f"{site.url}/private/secret", allowed_hosts=allowed(site))
    assert SITE_HITS["/private/secret"] == 0


async def test_oversized_page_stopped_while_streaming(site: ThreadedServer) -> None:
    with pytest.raises(CrawlError, match="larger than 5,000,000 bytes"):
        await crawl(f"{site.url}/huge", allowed_hosts=allowed(site))


async def test_page_decoded_with_http_charset(site: ThreadedServer) -> None:
    pages = await crawl(f"{site.url}/latin", allowed_hosts=allowed(site))
    assert pages == [Page(url=f"{site.url}/latin", title="Caf\u00e9", text="Cr\u00e8me br\u00fbl\u00e9e")]


async def test_hostile_page_is_skipped_and_the_crawl_goes_on(site: ThreadedServer) -> None:
    crawler = Crawler(f"{site.url}/links-to-hostile", max_depth=1, allowed_hosts=allowed(site),
                      parse_timeout=1.0)
    started = time.monotonic()
    pages = await crawler.run()
    assert paths(pages) == ["/links-to-hostile", "/d"]
    assert crawler.skipped["hostile"] == 1 and SITE_HITS["/hostile"] == 1
    assert time.monotonic() - started < 8


async def test_slow_drip_page_stopped_at_the_fetch_deadline(site: ThreadedServer) -> None:
    started = time.monotonic()
    with pytest.raises(CrawlError, match=r"took longer than 1.5 s"):
        await crawl(f"{site.url}/drip", allowed_hosts=allowed(site), timeout=0.5)
    assert time.monotonic() - started < 5


TRAP_HITS: Counter[str] = Counter()


def trap_app() -> FastAPI:
    """A crawler trap: one page with text, then endless links to 404s, binaries, redirects and
    noindex pages that link on and on."""
    app = counting_app(TRAP_HITS)

    def links(n: int) -> str:
        return "".join(f'<a href="/missing/{n}-{i}">m</a><a href="/bin/{n}-{i}">b</a>'
                       f'<a href="/hop/{n}-{i}">r</a><a href="/noindex/{n * 10 + i}">n</a>' for i in range(10))

    @app.get("/")
    def home() -> HTMLResponse:
        return HTMLResponse(f"<title>Trap</title><p>The only text.</p>{links(0)}")

    @app.get("/noindex/{n}")
    def noindex(n: int) -> HTMLResponse:
        return HTMLResponse(f'<meta name="robots" content="noindex"><p>hidden {n}</p>{links(n)}')

    @app.get("/bin/{n}")
    def binary(n: str) -> Response:
        return Response(b"\x00" * 100, media_type="application/octet-stream")

    @app.get("/hop/{n}")
    def hop(n: str) -> RedirectResponse:
        return RedirectResponse(f"/missing/after-{n}", status_code=302)

    return app


async def test_crawler_trap_ends_at_the_request_cap() -> None:
    TRAP_HITS.clear()
    with ThreadedServer(trap_app()) as trap:
        crawler = Crawler(trap.url, max_pages=5, max_depth=50, allowed_hosts=[f"127.0.0.1:{trap.port}"])
        pages = await crawler.run()
    assert paths(pages) == ["/"]
    cap = REQUESTS_PER_PAGE * 5 + EXTRA_REQUESTS
    assert crawler.max_requests == cap == 40
    assert crawler.requests == cap == sum(TRAP_HITS.values())  # every request counted, none beyond
    assert crawler.skipped["limit"] > 100  # the queue left when the cap was reached
    assert crawler.skipped["error"] > 0 and crawler.skipped["not_html"] > 0 and crawler.skipped["empty"] > 0


async def test_progress_reported_after_every_url(site: ThreadedServer) -> None:
    seen: list[tuple[int, int]] = []

    async def progress(crawler: Crawler) -> None:
        seen.append((crawler.fetched, len(crawler.pages)))

    pages = await crawl(site.url, allowed_hosts=allowed(site), on_progress=progress)
    assert seen[0] == (1, 1)  # the start page
    assert seen == sorted(seen) and seen[-1] == (8, len(pages)) and len(pages) == 5

    async def stop(crawler: Crawler) -> None:
        if len(crawler.pages) >= 2:
            raise RuntimeError("source deleted")

    with pytest.raises(RuntimeError, match="source deleted"):
        await crawl(site.url, allowed_hosts=allowed(site), on_progress=stop)
    assert SITE_HITS["/c"] == 1  # the first crawl only: the second stopped after /a
