"""Slack's v0 request signature and its 5-minute window (channels.slack.verify), on a fixed clock."""
import pytest

from channels.errors import Forbidden
from channels.slack import signature, verify

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b'{"type":"event_callback","event_id":"Ev1"}'
NOW = 1_712_000_000


def headers(ts: int, secret: str = SECRET, body: bytes = BODY) -> dict:
    return {"x-slack-request-timestamp": str(ts), "x-slack-signature": signature(secret, str(ts), body)}


@pytest.mark.parametrize("skew", [0, 300, -300])
def test_a_request_signed_within_five_minutes_passes(skew):
    verify(SECRET, headers(NOW + skew), BODY, now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_a_request_signed_more_than_five_minutes_away_is_refused(skew):
    with pytest.raises(Forbidden, match="5 minutes"):
        verify(SECRET, headers(NOW + skew), BODY, now=NOW)


def test_wrong_secret_tampered_body_and_missing_headers_are_refused():
    with pytest.raises(Forbidden, match="invalid Slack signature"):
        verify(SECRET, headers(NOW, secret="other"), BODY, now=NOW)
    with pytest.raises(Forbidden, match="invalid Slack signature"):
        verify(SECRET, headers(NOW), BODY + b" ", now=NOW)
    with pytest.raises(Forbidden, match="Timestamp"):
        verify(SECRET, {}, BODY, now=NOW)
    with pytest.raises(Forbidden, match="signing_secret"):
        verify("", headers(NOW), BODY, now=NOW)
