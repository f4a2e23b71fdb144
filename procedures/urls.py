"""Credentials written inline in a URL (spec §7): ``https://user:pass@host/`` or ``?api_key=abc``.

Shared by the validator (``http`` steps) and connector specs. Templates are masked before the URL
is split, so ``{{ }}`` parts (which may hold ``/`` or ``@``) cannot hide or fake a userinfo.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from procedures.expressions import secret_refs
from procedures.models import CREDENTIAL_NAME

_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_SECRET, _OTHER = "\ue000", "\ue001"  # private-use characters standing for masked templates


def _mask(url: str) -> str:
    return _TEMPLATE.sub(lambda m: _SECRET if secret_refs(m.group(0)) else _OTHER, url)


def _bad(value: str, literal_only: bool) -> bool:
    """True when ``value`` (masked) is not made only of allowed references."""
    allowed = {_SECRET, _OTHER} if literal_only else {_SECRET}
    return any(ch not in allowed for ch in value)


def url_credential_problem(url: str, *, literal_only: bool = False) -> str | None:
    """Why ``url`` carries a credential inline (a sentence with the fix), or None.

    With ``literal_only`` only literal text counts as inline (connector specs, whose templates
    see ``params`` and ``secrets``); otherwise anything but a ``{{ secrets.NAME }}`` does.
    """
    masked = _mask(url)
    try:
        parts = urlsplit(masked)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: the URL is refused when it is used
        return None
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0].replace(":", "")
        if userinfo and _bad(userinfo, literal_only):
            return ("credentials are written inline in the URL (`user:password@`); remove them and use "
                    "`auth: {type: basic, username: \"{{ secrets.NAME }}\", password: \"{{ secrets.NAME }}\"}`")
    for name, value in query:
        if CREDENTIAL_NAME.search(name) and value and _bad(value, literal_only):
            return (f"credential `{name}` is written inline in the URL's query; store it as a tenant secret "
                    f"and write `{name}={{{{ secrets.NAME }}}}`, or use `auth`")
    return None
