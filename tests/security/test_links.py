"""LinkSigner: signed approval links, expiry, tampering, CSRF; request_hash."""
from datetime import datetime, timedelta, timezone

import pytest

from security import SecurityError
from security.links import LinkExpired, LinkSigner, LinkTampered, request_hash

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_issue_and_verify() -> None:
    signer = LinkSigner("link-secret")
    token = signer.issue({"run": "r1", "step": "approve", "approver": "m@x.com"}, NOW + timedelta(hours=72))
    assert all(c.isalnum() or c in "-_" for c in token)
    data = signer.verify(token, NOW)
    assert data["run"] == "r1" and data["approver"] == "m@x.com"
    assert data["exp"] == int((NOW + timedelta(hours=72)).timestamp()) and len(data["lid"]) >= 16
    other = signer.verify(signer.issue({"run": "r1"}, NOW + timedelta(hours=1)), NOW)
    assert other["lid"] != data["lid"]
    assert "m@x.com" not in token  # payload is not readable


def test_expired() -> None:
    signer = LinkSigner("link-secret")
    token = signer.issue({"run": "r1"}, NOW + timedelta(minutes=5))
    with pytest.raises(LinkExpired) as info:
        signer.verify(token, NOW + timedelta(minutes=5))
    assert info.value.payload["run"] == "r1" and isinstance(info.value, SecurityError)
    assert signer.verify(token, (NOW + timedelta(minutes=4)).replace(tzinfo=None))["run"] == "r1"


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t[:20] + ("x" if t[20] != "x" else "y") + t[21:],
    lambda t: "",
    lambda t: "not a token at all!",
])
def test_tampered(mangle) -> None:
    signer = LinkSigner("link-secret")
    token = signer.issue({"run": "r1"}, NOW + timedelta(hours=1))
    with pytest.raises(LinkTampered):
        signer.verify(mangle(token), NOW)


def test_other_secret_rejected_and_empty_secret() -> None:
    token = LinkSigner("a").issue({"run": "r1"}, NOW + timedelta(hours=1))
    with pytest.raises(LinkTampered):
        LinkSigner("b").verify(token, NOW)
    with pytest.raises(SecurityError):
        LinkSigner("")


def test_csrf() -> None:
    signer = LinkSigner("link-secret")
    csrf = signer.csrf_token("lid-1")
    assert signer.check_csrf("lid-1", csrf)
    assert not signer.check_csrf("lid-2", csrf)
    assert not signer.check_csrf("lid-1", "")
    assert not LinkSigner("other").check_csrf("lid-1", csrf)


def test_request_hash_canonical() -> None:
    a = request_hash({"b": 1, "a": [1, "é"]})
    assert a == request_hash({"a": [1, "é"], "b": 1}) and len(a) == 64
    assert a != request_hash({"a": [1, "é"], "b": 2})
