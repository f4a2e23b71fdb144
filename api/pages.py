"""Small HTML pages for people who click e-mailed links (no JavaScript, no external assets)."""
from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

STYLE = ("body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}"
         "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}"
         "button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:.3rem;color:#fff;cursor:pointer}"
         ".approved{background:#1a7f37}.rejected{background:#cf222e}textarea{width:100%;min-height:4rem}")


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=robots content=noindex>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"})


def message_page(title: str, text: str, status: int) -> HTMLResponse:
    return page(title, f"<p>{escape(text)}</p>", status)


def details(rows: dict[str, object]) -> str:
    """A definition list of `rows` (names and values escaped)."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows.items())
    return f"<dl>{items}</dl>"


def detail_rows(rows: list[list[str]]) -> str:
    """What the request is about: the run's inputs and saved values (name, value) it was sent with."""
    if not rows:
        return ""
    items = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows)
    return f"<h2>Details</h2><dl>{items}</dl>"


def confirm_page(rows: dict[str, object], decision: str, csrf: str,
                 about: list[list[str]] = ()) -> HTMLResponse:
    """The approval confirm form: `rows` (request, run, step, ...), then `about` (the details)."""
    verb = "Approve" if decision == "approved" else "Reject"
    form = (f"<form method=post>{details(rows)}{detail_rows(list(about))}<p><label>Comment (optional)<br>"
            f"<textarea name=comment maxlength=2000></textarea></label></p>"
            f"<input type=hidden name=csrf value='{escape(csrf)}'>"
            f"<button class={decision} type=submit>Confirm: {verb}</button></form>")
    return page(f"{verb} this request?", form)
