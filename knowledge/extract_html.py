"""HTML to Markdown-ish text with boilerplate (navigation, banners, footers) removed.

Parsing uses BeautifulSoup with the stdlib ``html.parser``; the tree is walked iteratively,
so deeply nested (hostile) markup cannot exhaust the recursion limit. Building the tree costs
~30 µs and ~600 bytes per tag, and html.parser is quadratic on some malformed input (32 kB of
unclosed ``<b`` took 23 s), so untrusted pages and files are parsed by ``read_page`` in the
resource-limited child of ``extract_html_sandbox``, never in the worker itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from knowledge.extract_common import Extracted, collapse, tidy

DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside",
    "form", "iframe", "object", "embed", "canvas", "button", "select", "textarea", "dialog",
    "head", "title",
})
DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "menu", "menubar",
                        "search", "dialog", "alertdialog"})
_BOILERPLATE = re.compile(
    r"(^|[-_\s])(nav|navbar|navigation|menu|sidebar|breadcrumbs?|cookies?|consent|banner|footer|"
    r"skip-?link|share|social)($|[-_\s])",
    re.IGNORECASE,
)
KEEP_TAGS = frozenset({"html", "body", "main", "article"})
BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "main", "blockquote", "table", "thead", "tbody", "tfoot",
    "tr", "dl", "dt", "dd", "figure", "figcaption", "address", "details", "summary", "hr",
    "center", "fieldset", "caption", "body", "html",
})
LIST_TAGS = frozenset({"ul", "ol", "menu"})
HEADINGS = {f"h{n}": n for n in range(1, 7)}
CELL_TAGS = frozenset({"td", "th"})
_MARKUP_STARTS = tuple(b"<" + bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/!?")


@dataclass(frozen=True)
class ParsedPage:
    """What the crawler and the extractor need from a page: its readable content, its links
    (absolute http(s), when parsed with a URL) and its <meta name=robots> directives."""

    title: str
    text: str
    links: tuple[str, ...] = ()
    robots: frozenset[str] = frozenset()


def count_tags(data: bytes, limit: int) -> int:
    """The number of markup tokens ('<' then a letter, '/', '!' or '?': start and end tags,
    comments, declarations; script contents count too) when it may exceed ``limit``, else an
    upper bound not above it. No allocation: byte counts only (~50 ms for 4 MB)."""
    rough = data.count(b"<")
    return rough if rough <= limit else sum(data.count(start) for start in _MARKUP_STARTS)


def read_page(html: str | bytes, encoding: str | None = None, url: str | None = None) -> ParsedPage:
    """Parse a page in this process: the trusted half of ``extract_html_sandbox``."""
    soup = parse_html(html, encoding)
    extracted = soup_to_extracted(soup, url)
    return ParsedPage(title=extracted.title, text=extracted.text,
                      links=tuple(page_links(soup, url)) if url else (), robots=frozenset(robots_meta(soup)))


def parse_html(html: str | bytes, encoding: str | None = None) -> BeautifulSoup:
    """Parse ``html``; bytes are decoded with ``encoding`` (e.g. the HTTP charset) when it
    is a known codec, else as UTF-8 when valid, else from <meta charset> or detection."""
    if isinstance(html, bytes):
        for codec in filter(None, (encoding, "utf-8")):
            try:
                html = html.decode(codec)
                break
            except (LookupError, UnicodeDecodeError):
                continue
    return BeautifulSoup(html, "html.parser")


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in DROP_TAGS or tag.has_attr("hidden"):
        return True
    if tag.get("aria-hidden") == "true" or str(tag.get("role", "")).lower() in DROP_ROLES:
        return True
    if tag.name in KEEP_TAGS:
        return False
    classes = tag.get("class") or []
    names = [str(tag.get("id", "")), *(classes if isinstance(classes, list) else [classes])]
    return any(_BOILERPLATE.search(name) for name in names if name)


def _content_root(soup: BeautifulSoup) -> Tag:
    """<main>, [role=main] or a single <article> when present, else <body>."""
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if isinstance(main, Tag):
        return main
    articles = soup.find_all("article")
    if len(articles) == 1:
        return articles[0]
    body = soup.find("body")
    return body if isinstance(body, Tag) else soup


class _Writer:
    """Collects inline text into blocks: paragraphs, headings, list items, preformatted."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str]] = []  # (kind, markdown) with kind in p|h|li|pre
        self.buffer: list[str] = []
        self.kind = "p"
        self.prefix = ""
        self.list_depth = 0

    def start(self, kind: str, prefix: str = "") -> None:
        self.flush()
        self.kind, self.prefix = kind, prefix

    def flush(self) -> None:
        raw = "".join(self.buffer)
        text = tidy(raw) if self.kind == "pre" else collapse(raw)
        self.buffer = []
        if text:
            self.blocks.append((self.kind, self.prefix + text))
            self.kind, self.prefix = "p", ""

    def markdown(self) -> str:
        out: list[str] = []
        for index, (kind, text) in enumerate(self.blocks):
            if index:
                out.append("\n" if kind == "li" and self.blocks[index - 1][0] == "li" else "\n\n")
            out.append(text)
        return "".join(out)


def _open(tag: Tag, writer: _Writer) -> None:
    name = tag.name
    if name in HEADINGS:
        writer.start("h", "#" * HEADINGS[name] + " ")
    elif name == "li":
        writer.start("li", "  " * max(writer.list_depth - 1, 0) + "- ")
    elif name in LIST_TAGS:
        writer.flush()
        writer.list_depth += 1
    elif name == "pre":
        writer.start("pre")
    elif name == "br":
        writer.buffer.append("\n") if writer.kind == "pre" else writer.flush()
    elif name in CELL_TAGS:
        writer.buffer.append(" ")
    elif name in BLOCK_TAGS:
        writer.flush()


def _close(tag: Tag, writer: _Writer) -> None:
    if tag.name in LIST_TAGS:
        writer.list_depth -= 1
    if tag.name in HEADINGS or tag.name in LIST_TAGS or tag.name in BLOCK_TAGS or tag.name in ("li", "pre"):
        writer.flush()


def _walk(root: Tag, writer: _Writer) -> None:
    stack: list[tuple[object, bool]] = [(root, True)]
    while stack:
        node, entering = stack.pop()
        if isinstance(node, Tag):
            if not entering:
                _close(node, writer)
                continue
            if node is not root and _is_boilerplate(node):
                continue
            _open(node, writer)
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            writer.buffer.append(str(node))
    writer.flush()


def soup_to_extracted(soup: BeautifulSoup, url: str | None = None) -> Extracted:
    """The readable content of a parsed page; title from <title>, else the first <h1>."""
    root = _content_root(soup)
    writer = _Writer()
    _walk(root, writer)
    title_tag = soup.find("title")
    title = collapse(title_tag.get_text()) if title_tag else ""
    if not title:
        h1 = root.find("h1") or soup.find("h1")
        title = collapse(h1.get_text(" ")) if h1 else ""
    return Extracted(title=title or (url or ""), text=writer.markdown())


def robots_meta(soup: BeautifulSoup) -> set[str]:
    """Directives of <meta name="robots"> (e.g. {"noindex", "nofollow"})."""
    directives: set[str] = set()
    for meta in soup.find_all("meta", attrs={"name": re.compile(r"^robots$", re.IGNORECASE)}):
        directives |= {d.strip().lower() for d in str(meta.get("content", "")).split(",") if d.strip()}
    return directives


def page_links(soup: BeautifulSoup, url: str) -> list[str]:
    """Absolute http(s) link targets of <a href> (fragments dropped, rel=nofollow skipped)."""
    base_tag = soup.find("base", href=True)
    try:
        base = urljoin(url, str(base_tag["href"])) if base_tag else url
    except ValueError:
        base = url
    links: list[str] = []
    for anchor in soup.find_all("a", href=True):
        rel = anchor.get("rel") or []
        if "nofollow" in (rel if isinstance(rel, list) else [rel]):
            continue
        try:
            target = urldefrag(urljoin(base, str(anchor["href"]).strip()))[0]
        except ValueError:  # malformed URL such as "http://[oops"
            continue
        if target.startswith(("http://", "https://")):
            links.append(target)
    return links
