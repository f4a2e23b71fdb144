"""Help-center crawler: breadth-first over one site (or a sitemap), robots.txt honoured.

Every request — robots.txt, sitemaps, pages and each redirect hop — goes through the SSRF-
guarded client of ``connectors`` (internal addresses refused unless in ``allowed_hosts``).
Bodies are streamed and capped, each fetch has a wall-clock deadline, and a crawl makes at most
``REQUESTS_PER_PAGE * max_pages + EXTRA_REQUESTS`` requests in all (404s, non-HTML, redirects,
noindex pages included), so a crawler trap ends the crawl, not the activity's timeout. Pages are
fetched one at a time, in breadth-first order, and parsed in the HTML sandbox (one child
process per crawl).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser
from xml.etree.ElementTree import ParseError

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from connectors.client import MAX_REDIRECTS, REDIRECT_STATUSES, make_client
from connectors.errors import ConnectorError
from connectors.netguard import check_address, host_allowed
from knowledge.errors import CrawlError, HostileFile
from knowledge.extract_html import ParsedPage
from knowledge.extract_html_sandbox import TIMEOUT as PARSE_TIMEOUT
from knowledge.extract_html_sandbox import HtmlSandbox

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 5_000_000
MAX_ROBOTS_BYTES = 500_000
MAX_SITEMAPS = 20
REQUESTS_PER_PAGE = 4   # requests allowed per page of max_pages (robots, redirects, misses)
EXTRA_REQUESTS = 20     # plus this many (robots.txt, sitemaps)
FETCH_DEADLINE_FACTOR = 3  # a fetch (all hops, whole body) may take this many `timeout`s
HTML_TYPES = ("text/html", "application/xhtml+xml")
SITEMAP_ROOTS = ("urlset", "sitemapindex")


@dataclass(frozen=True)
class Page:
    """One crawled page: final URL (after redirects), title and Markdown-ish text."""

    url: str
    title: str
    text: str


class Skip(Exception):
    """A URL that is not crawled; ``reason`` is the Crawler.skipped counter it increments."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class _Body:
    url: str
    status: int
    content_type: str
    data: bytes

    @property
    def charset(self) -> str | None:
        """The charset parameter of the Content-Type header, if any."""
        for param in self.content_type.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip() == "charset" and value.strip():
                return value.strip().strip('"')
        return None


def normalize_url(url: str) -> str:
    """Lower-case scheme and host, default port and fragment dropped, empty path -> "/"."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def origin(url: str) -> str:
    """scheme://host[:port] of a normalized URL."""
    parts = urlsplit(normalize_url(url))
    return f"{parts.scheme}://{parts.netloc}"


def _looks_like_sitemap(url: str, body: _Body) -> bool:
    head = body.data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return (urlsplit(url).path.lower().endswith(".xml") or "xml" in body.content_type and "xhtml" not in
            body.content_type or head.startswith((b"<?xml", b"<urlset", b"<sitemapindex")))


def _sitemap_entries(data: bytes) -> tuple[str, list[str]]:
    """(root element name, <loc> URLs) of a sitemap; defusedxml forbids DTDs and entities."""
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise Skip("error", "sitemap declares a DTD or XML entities, which are not allowed") from None
    except ParseError as exc:
        raise Skip("error", f"sitemap is not valid XML ({exc})") from None
    name = root.tag.rsplit("}", 1)[-1]
    locs = [(el.text or "").strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc"]
    return name, [loc for loc in locs if loc]


Progress = Callable[["Crawler"], Awaitable[None]]


class Crawler:
    """One crawl. ``pages`` in crawl order; ``skipped`` counts URLs not crawled by reason
    (blocked, external, robots, not_html, too_large, error, hostile, empty, limit);
    ``fetched`` counts the URLs fetched (start URL and queued pages), ``requests`` every HTTP
    request (robots.txt, sitemaps and redirect hops too).

    ``on_progress(crawler)`` is awaited after each URL (an exception from it ends the crawl).
    After ``time_budget`` seconds no new URL is started (the rest counts as "limit").
    """

    def __init__(self, start_url: str, *, max_pages: int = 50, max_depth: int = 3,
                 allowed_hosts: Iterable[str] = (), timeout: float = 10.0,
                 user_agent: str = "FlywheelBot/1.0", on_progress: Progress | None = None,
                 parse_timeout: float = PARSE_TIMEOUT, time_budget: float | None = None) -> None:
        self.start_url = start_url
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.max_requests = REQUESTS_PER_PAGE * max_pages + EXTRA_REQUESTS
        self.allowed_hosts = tuple(allowed_hosts)
        self.timeout = timeout
        self.user_agent = user_agent
        self.on_progress = on_progress
        self.parse_timeout = parse_timeout
        self.time_budget = time_budget
        self.pages: list[Page] = []
        self.skipped: Counter[str] = Counter()
        self.fetched = 0
        self.requests = 0
        self.site = ""
        self._robots: dict[str, RobotFileParser] = {}
        self._seen: set[str] = set()
        self._queue: deque[tuple[str, int]] = deque()
        self._client: httpx.AsyncClient | None = None
        self._sandbox: HtmlSandbox | None = None

    async def run(self) -> list[Page]:
        """Crawl and return the pages; CrawlError when the start URL cannot be crawled."""
        try:
            parts = urlsplit(normalize_url(self.start_url))
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CrawlError(f"cannot crawl {self.start_url!r}: the start URL must be an absolute "
                             "http(s) URL such as https://help.example.com/")
        with HtmlSandbox(timeout=self.parse_timeout) as sandbox:
            async with make_client(timeout=self.timeout, allowed_hosts=self.allowed_hosts) as client:
                self._client, self._sandbox = client, sandbox
                started = time.monotonic()
                await self._start()
                await self._progress()
                while (self._queue and len(self.pages) < self.max_pages and self.requests < self.max_requests
                       and (self.time_budget is None or time.monotonic() - started < self.time_budget)):
                    url, depth = self._queue.popleft()
                    try:
                        await self._visit(url, depth)
                    except Skip as skip:
                        self.skipped[skip.reason] += 1
                        log.info("crawl skipped %s: %s", url, skip.message)
                    await self._progress()
        self.skipped["limit"] += len(self._queue)
        log.info("crawled %d pages from %s in %d requests, skipped %s", len(self.pages), self.start_url,
                 self.requests, dict(self.skipped))
        return self.pages

    async def _progress(self) -> None:
        if self.on_progress is not None:
            await self.on_progress(self)

    async def _start(self) -> None:
        """Fetch the start URL: a sitemap seeds the queue, a page is visited at depth 0."""
        start = normalize_url(self.start_url)
        self.site = origin(start)
        try:
            await self._check_robots(start)
            self.fetched += 1
            body = await self._fetch(start, follow_offsite=True)
            self.site = origin(body.url)
            if normalize_url(body.url) != start:
                await self._check_robots(normalize_url(body.url))
            self._seen.update({start, normalize_url(body.url)})
            if _looks_like_sitemap(start, body):
                await self._seed_from_sitemap(body)
            else:
                await self._visit(body.url, 0, body)
        except Skip as skip:
            raise CrawlError(f"cannot crawl {self.start_url}: {skip.message}") from None

    async def _seed_from_sitemap(self, body: _Body) -> None:
        """Queue the <loc> URLs of a sitemap (and of the sitemaps a sitemap index lists)."""
        sitemaps, fetched = deque([body]), 1
        while sitemaps:
            current = sitemaps.popleft()
            try:
                kind, locs = _sitemap_entries(current.data)
                if kind not in SITEMAP_ROOTS:
                    raise Skip("error", "it is XML but not a sitemap (<urlset> or <sitemapindex>); "
                                        "give the help center's home page or its sitemap.xml instead")
            except Skip as skip:
                if current is body:
                    raise
                self.skipped[skip.reason] += 1
                continue
            if kind == "urlset":
                for loc in locs:
                    self._enqueue(loc, 0)
                continue
            for loc in locs:
                if not self._same_site(loc) or fetched >= MAX_SITEMAPS:
                    self.skipped["external" if not self._same_site(loc) else "limit"] += 1
                    continue
                fetched += 1
                try:
                    sitemaps.append(await self._fetch(normalize_url(loc)))
                except Skip as skip:
                    self.skipped[skip.reason] += 1

    def _same_site(self, url: str) -> bool:
        try:
            return url.startswith(("http://", "https://")) and origin(url) == self.site
        except ValueError:  # e.g. a port out of range
            return False

    def _offsite_reason(self, url: str) -> str:
        """"blocked" for an internal IP literal the guard would refuse, else "external"."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
            port = parts.port
        except ValueError:
            return "external"  # a host name (not resolved for a link that is not followed) or bad URL
        try:
            if not host_allowed(host, port, self.allowed_hosts):
                check_address(host, host)
        except ConnectorError:
            return "blocked"
        return "external"

    def _enqueue(self, url: str, depth: int) -> None:
        if not self._same_site(url):
            self.skipped[self._offsite_reason(url)] += 1
            return
        key = normalize_url(url)
        if key not in self._seen:
            self._seen.add(key)
            self._queue.append((key, depth))

    async def _visit(self, url: str, depth: int, body: _Body | None = None) -> None:
        """Fetch (unless given) one page, record it, enqueue its same-site links."""
        if body is None:
            await self._check_robots(url)
            self.fetched += 1
            body = await self._fetch(url)
            final = normalize_url(body.url)
            if final != url:
                if final in self._seen:
                    return
                self._seen.add(final)
                await self._check_robots(final)
        if not body.content_type.startswith(HTML_TYPES):
            raise Skip("not_html", f"content type {body.content_type or 'missing'} is not HTML")
        parsed = await self._parse(body)
        if parsed.text and not parsed.robots & {"noindex", "none"}:
            self.pages.append(Page(url=body.url, title=parsed.title, text=parsed.text))
        else:
            self.skipped["empty"] += 1
        if depth < self.max_depth and not parsed.robots & {"nofollow", "none"}:
            for link in parsed.links:
                self._enqueue(link, depth + 1)

    async def _parse(self, body: _Body) -> ParsedPage:
        assert self._sandbox is not None
        try:
            return await asyncio.to_thread(self._sandbox.parse, body.data, body.charset, body.url)
        except HostileFile as err:
            raise Skip("hostile", f"{body.url}: {err.message}") from None

    async def _check_robots(self, url: str) -> None:
        site = origin(url)
        if site not in self._robots:
            self._robots[site] = await self._load_robots(site)
        if not self._robots[site].can_fetch(self.user_agent, url):
            raise Skip("robots", f"robots.txt of {site} disallows {url} for {self.user_agent}")

    async def _load_robots(self, site: str) -> RobotFileParser:
        """robots.txt per RFC 9309: 4xx allows everything, 5xx disallows everything."""
        parser = RobotFileParser(f"{site}/robots.txt")
        try:
            body = await self._fetch(f"{site}/robots.txt", max_bytes=MAX_ROBOTS_BYTES, any_status=True)
        except Skip as skip:
            if skip.reason in ("blocked", "error"):
                raise
            body = None
        status = body.status if body else 404
        if status >= 500:
            parser.disallow_all = True
        elif status >= 400 or body is None:
            parser.allow_all = True
        else:
            parser.parse(body.data.decode("utf-8", errors="replace").splitlines())
        return parser

    async def _fetch(self, url: str, *, max_bytes: int = MAX_PAGE_BYTES, follow_offsite: bool = False,
                     any_status: bool = False) -> _Body:
        """GET ``url``, following redirects hop by hop through the guard, body capped, all of it
        within FETCH_DEADLINE_FACTOR * timeout.

        Redirects leaving the site are refused unless ``follow_offsite``; a non-2xx final
        status is a Skip unless ``any_status``.
        """
        deadline = FETCH_DEADLINE_FACTOR * self.timeout
        try:
            async with asyncio.timeout(deadline):
                return await self._fetch_hops(url, max_bytes=max_bytes, follow_offsite=follow_offsite,
                                              any_status=any_status)
        except TimeoutError:
            raise Skip("error", f"GET {url} took longer than {deadline:g} s") from None

    async def _fetch_hops(self, url: str, *, max_bytes: int, follow_offsite: bool, any_status: bool) -> _Body:
        assert self._client is not None
        headers = {"User-Agent": self.user_agent, "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.5"}
        for _ in range(MAX_REDIRECTS + 1):
            request = self._client.build_request("GET", url, headers=headers)
            response = await self._send(request)
            try:
                if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                    url = self._redirect_target(response, follow_offsite)
                    continue
                if not any_status and not 200 <= response.status_code < 300:
                    raise Skip("error", f"GET {url} returned HTTP {response.status_code}")
                data = await self._read(response, max_bytes)
            finally:
                await response.aclose()
            return _Body(url=str(response.url), status=response.status_code,
                         content_type=response.headers.get("content-type", "").lower(), data=data)
        raise Skip("error", f"GET {url}: more than {MAX_REDIRECTS} redirects")

    async def _send(self, request: httpx.Request) -> httpx.Response:
        if self.requests >= self.max_requests:
            raise Skip("limit", f"GET {request.url} not sent: the crawl made its {self.max_requests} requests "
                                f"({REQUESTS_PER_PAGE} per page of max_pages + {EXTRA_REQUESTS})")
        self.requests += 1
        try:
            assert self._client is not None
            return await self._client.send(request, stream=True)
        except ConnectorError as exc:  # raised by the SSRF guard before connecting
            reason = "blocked" if "internal address" in exc.message else "error"
            raise Skip(reason, f"GET {request.url} refused: {exc.message}") from None
        except httpx.TimeoutException:
            raise Skip("error", f"GET {request.url} timed out after {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise Skip("error", f"GET {request.url} failed: {exc or type(exc).__name__}") from None

    def _redirect_target(self, response: httpx.Response, follow_offsite: bool) -> str:
        try:
            target = response.url.join(response.headers["location"])
        except (httpx.InvalidURL, ValueError):
            raise Skip("error", f"GET {response.url} redirected to an invalid URL") from None
        if target.scheme not in ("http", "https"):
            raise Skip("error", f"GET {response.url} redirected to unsupported scheme {target.scheme!r}")
        url = normalize_url(str(target))
        if not follow_offsite and not self._same_site(url):
            raise Skip(self._offsite_reason(url), f"GET {response.url} redirected off the site to {url}")
        return url

    @staticmethod
    async def _read(response: httpx.Response, max_bytes: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise Skip("too_large", f"GET {response.url} is {int(declared):,} bytes, the limit is {max_bytes:,}")
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise Skip("too_large", f"GET {response.url} is larger than {max_bytes:,} bytes")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise Skip("error", f"GET {response.url} failed while reading: {exc or type(exc).__name__}") from None
        return b"".join(chunks)


async def crawl(start_url: str, *, max_pages: int = 50, max_depth: int = 3, allowed_hosts: Iterable[str] = (),
                timeout: float = 10.0, user_agent: str = "FlywheelBot/1.0",
                on_progress: Progress | None = None) -> list[Page]:
    """Crawl a help center from ``start_url`` (a page or a sitemap); see Crawler for counts."""
    crawler = Crawler(start_url, max_pages=max_pages, max_depth=max_depth, allowed_hosts=allowed_hosts,
                      timeout=timeout, user_agent=user_agent, on_progress=on_progress)
    return await crawler.run()
