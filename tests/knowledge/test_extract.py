"""Text extraction: HTML boilerplate removal, Markdown/text, DOCX and PDF built here, hostile files."""
from __future__ import annotations

import io
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from knowledge.errors import HostileFile, KnowledgeError, TooLarge, UnsupportedFile
from knowledge.extract import Extracted, extract, html_to_text
from knowledge.extract_html_sandbox import HtmlSandbox
from knowledge.extract_pdf import pdf_to_text

FILES = Path(__file__).parent / "files"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


# ---------------------------------------------------------------- builders

def make_pdf(streams: list[bytes], *, flate: bool = False, title: str | None = None) -> bytes:
    """A valid PDF (correct xref offsets) with one page per content stream, Helvetica font."""
    n = len(streams)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    info = f" /Info {4 + 2 * n} 0 R" if title else ""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, stream in enumerate(streams):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       f"<< /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        head = b"<< /Length %d%s >>\nstream\n" % (len(stream), b" /Filter /FlateDecode" if flate else b"")
        objects.append(head + stream + b"\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, info.encode(), xref)
    return bytes(out)


def text_stream(*lines: str) -> bytes:
    ops = [b"BT /F1 12 Tf 72 720 Td 14 TL"] + [b"(" + line.encode() + b") Tj T*" for line in lines] + [b"ET"]
    return b"\n".join(ops)


def deflate_repeated(chunk: bytes, times: int) -> bytes:
    """zlib stream of ``chunk`` * ``times``, built without holding the inflated data."""
    compressor = zlib.compressobj(9)
    return b"".join(compressor.compress(chunk) for _ in range(times)) + compressor.flush()


def w_paragraph(text: str, style: str | None = None, numbered: bool = False) -> str:
    props = ""
    if style or numbered:
        inner = (f'<w:pStyle w:val="{style}"/>' if style else "")
        inner += '<w:numPr><w:ilvl w:val="0"/><w:numId w:val="1"/></w:numPr>' if numbered else ""
        props = f"<w:pPr>{inner}</w:pPr>"
    half = len(text) // 2
    return f'<w:p>{props}<w:r><w:t xml:space="preserve">{text[:half]}</w:t></w:r><w:r><w:t>{text[half:]}</w:t></w:r></w:p>'


def make_docx(body_xml: str, *, prolog: str = "", styles: str | None = None) -> bytes:
    document = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
                f'<w:document xmlns:w="{W_NS}"><w:body>{body_xml}</w:body></w:document>')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.'
                         'openxmlformats.org/package/2006/content-types"/>')
        archive.writestr("word/document.xml", document)
        if styles is not None:
            archive.writestr("word/styles.xml", f'<?xml version="1.0"?><w:styles xmlns:w="{W_NS}">{styles}</w:styles>')
    return buffer.getvalue()


# ---------------------------------------------------------------- HTML

def test_html_keeps_article_and_drops_boilerplate() -> None:
    page = extract("help_article.html", (FILES / "help_article.html").read_bytes())
    assert page.title == "Returns and refunds | Acme Help Center"
    text = page.text
    assert "# Returns and refunds" in text.splitlines()
    assert "## How to start a return" in text.splitlines()
    assert "### Refund timing" in text.splitlines()
    assert "You can return any item within 30 days of delivery. Items must be unused." in text
    assert "- Open your orders.\n- Choose the item and click Return." in text
    assert "Refunds reach your card within 5 business days." in text
    for junk in ("cookies", "HEADER-TEXT", "NAV-SHIPPING", "BREADCRUMB", "SCRIPT-TEXT", "secret-css",
                 "SIDEBAR-TEXT", "FOOTER-TEXT", "SOCIAL-TEXT", "ASIDE-TEXT"):
        assert junk not in text, junk


def test_html_without_main_uses_body_and_first_h1_as_title() -> None:
    html = """<body><div id="top-navigation"><a href="/">Home</a> MENU-TEXT</div>
    <div role="navigation">ROLE-NAV</div><div class="content"><h1>Reset your   password</h1>
    <p>Click <b>Forgot password</b>
    on the sign-in page.</p><ul><li>Check spam<ul><li>Nested tip</li></ul></li></ul>
    <template>TEMPLATE-TEXT</template><noscript>NOSCRIPT-TEXT</noscript><svg><text>SVG-TEXT</text></svg>
    <form>FORM-TEXT</form><!-- COMMENT-TEXT --><p hidden>HIDDEN-TEXT</p></div>
    <div class="site-footer">FOOTER-TEXT</div></body>"""
    page = html_to_text(html, url="https://help.example.com/reset")
    assert page == Extracted(
        title="Reset your password",
        text="# Reset your password\n\nClick Forgot password on the sign-in page.\n\n- Check spam\n  - Nested tip",
    )


def test_html_title_falls_back_to_url_and_deep_nesting_is_handled() -> None:
    deep = "<div>" * 20_000 + "deep text" + "</div>" * 20_000
    page = html_to_text(deep, url="https://help.example.com/x")
    assert page.title == "https://help.example.com/x"
    assert page.text == "deep text"


def test_html_bytes_in_legacy_charset_use_meta_charset() -> None:
    data = '<meta charset="windows-1252"><title>Caf\u00e9</title><p>\u201cQuoted\u201d</p>'.encode("cp1252")
    assert extract("legacy.html", data) == Extracted(title="Caf\u00e9", text="\u201cQuoted\u201d")


def bounded(fn, *args):
    """(exception raised by fn(*args), seconds, peak bytes this process allocated meanwhile)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(HostileFile) as info:
            fn(*args)
        return info.value, time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_html_tag_flood_rejected_before_parsing() -> None:
    deep = b"<div>" * 400_000 + b"deep text" + b"</div>" * 400_000  # 4.4 MB: was 11 s and 293 MB
    error, seconds, peak = bounded(extract, "deep.html", deep)
    assert "800,000 tags, the limit is 100,000" in error.message and "split it" in error.message
    assert seconds < 3.0
    assert peak < 12_000_000  # no tree: a copy of the bytes at most
    flat = b"<br>" * 1_000_000  # 4 MB: was 32 s and 676 MB
    assert "1,000,000 tags" in bounded(extract, "flat.html", flat)[0].message


def test_html_parser_pathology_stopped_at_wall_clock_timeout() -> None:
    quadratic = "<p>" + "a <b" * 8_000  # 32 kB, 8,000 tags: html.parser alone takes ~25 s
    with HtmlSandbox(timeout=1.5) as sandbox:
        error, seconds, peak = bounded(sandbox.parse, quadratic)
        assert "did not finish within 1.5 s" in error.message
        assert seconds < 4.0 and peak < 2_000_000
        assert sandbox.parse("<title>After</title><p>Fine again</p>").text == "Fine again"  # a fresh child


def test_html_parse_stopped_at_memory_limit() -> None:
    attributes = "<p " + " ".join(f"a{i}=1" for i in range(400_000)) + ">x</p>"  # one tag, ~330 MB parsed
    with HtmlSandbox(memory_bytes=150 * 2**20) as sandbox:
        error, seconds, peak = bounded(sandbox.parse, attributes)
        assert "more than 150 MB of memory" in error.message
        assert seconds < 10.0 and peak < 12_000_000
        assert sandbox.parse("<p>Fine again</p>").text == "Fine again"


def test_closing_the_sandbox_stops_a_running_parse_at_once() -> None:
    sandbox, errors = HtmlSandbox(timeout=30), []

    def parse() -> None:
        try:
            sandbox.parse("<p>" + "a <b" * 8_000)
        except HostileFile as err:
            errors.append(err.message)

    worker = threading.Thread(target=parse)
    worker.start()
    time.sleep(1.0)
    started = time.monotonic()
    sandbox.close()  # what a cancelled crawl does
    worker.join(timeout=5)
    assert time.monotonic() - started < 1.0 and not worker.is_alive()
    assert errors and "stopped by its resource limits" in errors[0]


def test_html_sandbox_returns_links_and_robots_directives() -> None:
    page = ('<html><head><title>T</title><meta name="ROBOTS" content="noindex, NoFollow"></head>'
            '<body><main><p>Body <a href="/x#frag">x</a> <a rel="nofollow" href="/y">y</a></p></main></body></html>')
    with HtmlSandbox() as sandbox:
        parsed = sandbox.parse(page.encode(), "utf-8", "https://help.example.com/a/")
    assert (parsed.title, parsed.text) == ("T", "Body x y")
    assert parsed.links == ("https://help.example.com/x",)
    assert parsed.robots == {"noindex", "nofollow"}


def test_html_with_only_boilerplate_has_no_text() -> None:
    with pytest.raises(UnsupportedFile, match="no text found"):
        extract("empty.html", b"<html><nav>Home</nav><footer>(c) Acme</footer></html>")


# ---------------------------------------------------------------- Markdown and text

def test_markdown_passes_through_with_heading_title() -> None:
    data = (FILES / "shipping.md").read_bytes()
    page = extract("shipping.md", data)
    assert page.title == "Shipping times"
    assert page.text == data.decode().strip()


def test_text_title_is_filename_stem_and_bad_utf8_is_replaced() -> None:
    page = extract("docs/Opening hours.txt", b"\xef\xbb\xbfWe are open 9-5.\r\n\r\n\r\n\r\nCaf\xe9 closed Sundays.  \r\n")
    assert page == Extracted(title="Opening hours", text="We are open 9-5.\n\nCaf\ufffd closed Sundays.")


def test_text_with_nul_bytes_is_rejected() -> None:
    with pytest.raises(UnsupportedFile, match="NUL bytes") as info:
        extract("notes.txt", b"hello\x00world")
    assert ".pdf" in info.value.message


def test_stray_nul_bytes_are_dropped_and_utf16_is_decoded() -> None:
    text = b"# Notes\n\nStray NUL\x00 from a bad export. " + b"Then plain text. " * 100
    assert extract("notes.md", text).text.startswith("# Notes\n\nStray NUL from a bad export.")
    page = extract("p.html", b"<title>T\x00</title><p>" + b"word " * 400 + b"\x00</p>")
    assert page.title == "T" and "\x00" not in page.text
    assert extract("win.txt", "\ufeffCaf\u00e9 au lait\r\n".encode("utf-16-le")) == Extracted(
        title="win", text="Caf\u00e9 au lait")
    with pytest.raises(UnsupportedFile, match="binary, not an HTML page"):
        extract("bin.html", b"<p>" + b"\x00" * 50 + b"</p>")


def test_markdown_front_matter_is_read_and_stripped() -> None:
    data = (b"---\ntitle: Gift cards\nurl: https://help.example.com/gift-cards\nid: gift-cards\n"
            b"tags: [a, b]\n---\n# Gift cards\n\nThey never expire.\n")
    assert extract("gift.md", data) == Extracted(title="Gift cards", text="# Gift cards\n\nThey never expire.",
                                                 url="https://help.example.com/gift-cards", article_id="gift-cards")
    plain = extract("rule.md", b"# Title\n\n---\n\nA horizontal rule is not front matter.\n")
    assert plain.text.startswith("# Title\n\n---") and plain.url is None
    assert extract("empty.md", b"---\n---\nJust a body.\n") == Extracted(title="empty", text="Just a body.")
    for bad, message in ((b"---\n- a list\n---\nx", "must be a YAML mapping"),
                         (b"---\ntitle: [unclosed\n---\nx", "not valid YAML"),
                         (b"---\ntitle: {a: 1}\n---\nx", "'title' must be text"),
                         (b"---\nurl: javascript:alert(1)\n---\nx", "must be an http\\(s\\) URL"),
                         (b"---\nx: " + b"y" * 30_000 + b"\n---\nx", "longer than 20,000")):
        with pytest.raises(UnsupportedFile, match=message):
            extract("bad.md", bad)


def test_blank_text_is_rejected() -> None:
    with pytest.raises(UnsupportedFile, match="no text found"):
        extract("blank.md", b" \n\n\t\n")


# ---------------------------------------------------------------- type, size

def test_unknown_type_lists_supported_types() -> None:
    with pytest.raises(UnsupportedFile) as info:
        extract("setup.exe", b"MZ\x90\x00\x03", "application/octet-stream")
    message = info.value.message
    assert "'setup.exe'" in message and ".exe" in message
    for kind in (".pdf", ".docx", ".html", ".md", ".txt"):
        assert kind in message
    assert isinstance(info.value, KnowledgeError)


def test_too_large_upload_is_rejected_before_parsing() -> None:
    with pytest.raises(TooLarge) as info:
        extract("big.txt", b"a" * 1001, max_bytes=1000)
    assert "1,001 bytes" in info.value.message and "1,000" in info.value.message
    assert "Split" in info.value.message
    assert extract("ok.txt", b"a" * 1000, max_bytes=1000).text == "a" * 1000


def test_type_from_content_type_and_magic_bytes() -> None:
    assert extract("upload", b"# Title\n\nBody", "text/markdown; charset=utf-8").title == "Title"
    assert extract("upload", b"<!DOCTYPE html><title>T</title><p>Hi</p>").text == "Hi"


# ---------------------------------------------------------------- DOCX

def test_docx_headings_paragraphs_and_lists() -> None:
    body = "".join([
        w_paragraph("Warranty guide", "Title"),
        w_paragraph("Coverage", "Heading1"),
        w_paragraph("Every device is covered for two years."),
        w_paragraph("What is excluded", "Kop2"),  # localized style id, named in styles.xml
        w_paragraph("Water damage", numbered=True),
        w_paragraph("Broken screens", numbered=True),
        "<w:tbl><w:tr><w:tc>" + w_paragraph("Table cell text") + "</w:tc></w:tr></w:tbl>",
        ("<w:p><w:r><w:t>Tab</w:t><w:tab/><w:t>separated</w:t></w:r>"
         "<w:del><w:r><w:delText>DELETED</w:delText></w:r></w:del></w:p>"),
    ])
    styles = '<w:style w:type="paragraph" w:styleId="Kop2"><w:name w:val="heading 2"/></w:style>'
    page = extract("warranty.docx", make_docx(body, styles=styles))
    assert page.title == "Warranty guide"
    assert page.text == ("# Warranty guide\n\n# Coverage\n\nEvery device is covered for two years.\n\n"
                         "## What is excluded\n\n- Water damage\n- Broken screens\n\nTable cell text\n\n"
                         "Tab separated")


def test_docx_zip_bomb_rejected_fast_with_bounded_memory() -> None:
    buffer = io.BytesIO()
    with (zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
          archive.open("word/document.xml", "w", force_zip64=True) as entry):
        chunk = b" " * (1 << 20)
        for _ in range(200):  # 200 MB of spaces
            entry.write(chunk)
    bomb = buffer.getvalue()
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(HostileFile, match="zip bomb") as info:
            extract("bomb.docx", bomb)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 20_000_000
    assert "re-upload" in info.value.message


def test_docx_high_ratio_entry_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<a/>" + b" " * 20_000_000)
    with pytest.raises(HostileFile, match=r"compresses \d+:1"):
        extract("ratio.docx", buffer.getvalue())


def test_docx_with_xml_entities_rejected() -> None:
    laughs = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
              + "]>")
    data = make_docx(w_paragraph("&lol9;"), prolog=laughs)
    with pytest.raises(HostileFile, match="XML entities are not allowed"):
        extract("laughs.docx", data)


def test_docx_damaged_or_not_word() -> None:
    with pytest.raises(UnsupportedFile, match="not a valid DOCX"):
        extract("broken.docx", b"PK\x03\x04 this is not really a zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UnsupportedFile, match="word/document.xml is missing"):
        extract("sheet.docx", buffer.getvalue())


# ---------------------------------------------------------------- PDF

def test_pdf_text_per_page_and_dispatch_by_magic_bytes() -> None:
    pdf = make_pdf([text_stream("Refund policy", "Refunds within 30 days."), text_stream("Contact us anytime.")],
                   title="Refunds")
    page = extract("policy.pdf", pdf)
    assert page.title == "Refunds"
    assert page.text == "Refund policy\nRefunds within 30 days.\n\nContact us anytime."
    assert extract("upload.bin", pdf).text == page.text  # unknown extension: magic bytes
    untitled = extract("scan", make_pdf([text_stream("Hello")]), "application/pdf")
    assert untitled == Extracted(title="scan", text="Hello")


def test_pdf_without_text_and_garbage_pdf() -> None:
    with pytest.raises(UnsupportedFile, match="no text found"):
        extract("image-only.pdf", make_pdf([b""]))
    with pytest.raises(UnsupportedFile, match="could not be read"):
        extract("garbage.pdf", b"%PDF-1.7\nthis is not a pdf at all")


def test_pdf_decompression_bomb_is_hostile() -> None:
    bomb = make_pdf([deflate_repeated(b"\0" * (1 << 20), 500)], flate=True)  # 500 MB of zeros
    assert len(bomb) < 1_000_000
    started = time.monotonic()
    with pytest.raises(HostileFile, match="rejected PDF"):
        extract("bomb.pdf", bomb)
    assert time.monotonic() - started < 20


@pytest.fixture(scope="module")
def heavy_pdf() -> bytes:
    """~40 MB of text operators: slow and memory-hungry to parse, under pypdf's own limits."""
    return make_pdf([deflate_repeated(b"(Hello world) Tj\n" * 60_000, 40)], flate=True)


def test_pdf_parse_killed_at_wall_clock_timeout(heavy_pdf: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(HostileFile, match="did not finish within 1.5 s"):
        pdf_to_text(heavy_pdf, timeout=1.5)
    assert time.monotonic() - started < 4


def test_pdf_parse_stopped_at_memory_limit(heavy_pdf: bytes) -> None:
    with pytest.raises(HostileFile, match="memory|resource limits"):
        pdf_to_text(heavy_pdf, memory_bytes=160 * 2**20, timeout=60)


def test_pdf_page_limit() -> None:
    pdf = make_pdf([text_stream(f"page {i}") for i in range(5)])
    with pytest.raises(HostileFile, match="5 pages, the limit is 3"):
        pdf_to_text(pdf, max_pages=3)
    assert pdf_to_text(pdf, max_pages=5)[1].split("\n\n") == [f"page {i}" for i in range(5)]


def raw_pdf(objects: list[bytes], *, prev_loop: bool = False) -> bytes:
    """A PDF from hand-written objects (numbered from 1), with a correct xref; ``prev_loop``
    makes the trailer's /Prev point at its own xref section (an endless incremental chain)."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    prev = b" /Prev %d" % xref if prev_loop else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, prev, xref)
    return bytes(out)


CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
HELLO = b"<< /Length 36 >>\nstream\nBT /F1 12 Tf 72 720 Td (Hello) Tj ET\nendstream"
PAGE = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>")
LOOPING_PDFS = {
    # a page tree node that is its own kid
    "self-kid": [CATALOG, b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>", PAGE, HELLO, FONT],
    # two page tree nodes that are each other's kid
    "mutual-kids": [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                    b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>", HELLO, FONT],
    # a page whose /Parent is itself: inheriting /Resources walks the chain
    "parent-cycle": [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                     b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>", HELLO, FONT],
}
SELF_REFERENCING_PDFS = {
    # /Contents is an object that is a reference to itself
    "self-reference": [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                       PAGE.replace(b"/Contents 4 0 R", b"/Contents 6 0 R"), HELLO, FONT, b"6 0 R"],
    # a form XObject that draws itself
    "recursive-xobject": [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                          (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                           b"/Resources << /XObject << /X 6 0 R >> >> >>"),
                          b"<< /Length 5 >>\nstream\n/X Do\nendstream", FONT,
                          (b"<< /Type /XObject /Subtype /Form /BBox [0 0 9 9] /Resources << /XObject << /X 6 0 R >> >> "
                           b"/Length 5 >>\nstream\n/X Do\nendstream")],
}


@pytest.mark.parametrize("name", sorted(LOOPING_PDFS))
def test_pdf_with_looping_structure_rejected_quickly(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(HostileFile, match="rejected PDF: its object structure loops") as info:
        extract(f"{name}.pdf", raw_pdf(LOOPING_PDFS[name]))
    assert time.monotonic() - started < 5
    assert "cycl" in info.value.message and "split it into smaller PDFs" in info.value.message


@pytest.mark.parametrize("name", sorted(SELF_REFERENCING_PDFS))
def test_pdf_with_self_referencing_objects_rejected_quickly(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(UnsupportedFile, match="no text found"):
        extract(f"{name}.pdf", raw_pdf(SELF_REFERENCING_PDFS[name]))
    assert time.monotonic() - started < 5


def test_pdf_with_looping_xref_chain_read_once() -> None:
    started = time.monotonic()
    assert extract("prev-loop.pdf", raw_pdf([CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", PAGE,
                                             HELLO, FONT], prev_loop=True)).text == "Hello"
    assert time.monotonic() - started < 5
