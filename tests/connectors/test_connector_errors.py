"""ConnectorError naming and retryability (spec §4)."""
import pytest

from connectors.errors import ConnectorError


@pytest.mark.parametrize(
    ("name", "status", "retryable"),
    [
        ("http_4xx", 400, False), ("http_4xx", 404, False), ("http_4xx", 408, True),
        ("http_4xx", 429, True), ("http_5xx", 503, True), ("timeout", None, True),
        ("connection", None, True), ("validation", None, False), ("connector", None, False),
    ],
)
def test_retryable_follows_spec(name: str, status: int | None, retryable: bool) -> None:
    assert ConnectorError(name, "x", status=status).retryable is retryable


def test_unknown_name_rejected_and_to_dict() -> None:
    with pytest.raises(ValueError):
        ConnectorError("boom", "x")
    err = ConnectorError("http_4xx", "m", status=429, retry_after=2.0)
    assert err.to_dict() == {"name": "http_4xx", "message": "m", "status": 429, "retry_after": 2.0, "retryable": True}
    assert err.with_message("n").message == "n" and err.with_message("n").status == 429
