"""Shared fixtures for the procedures tests: an inline connector catalog and a check helper."""
from __future__ import annotations

import textwrap

import pytest

from procedures.errors import Problem
from procedures.normalize import normalize
from procedures.parser import parse_document
from procedures.validator import validate

CATALOG = {
    "shopify": {
        "connector": "shopify",
        "base_url": "https://{{ secrets.shop_domain }}/admin/api/2024-01",
        "operations": {
            "orders.get": {
                "method": "GET", "path": "/orders.json", "read_only": True,
                "response": {"id": "$.orders[0].id", "total": "$.orders[0].total_price",
                             "currency": "$.orders[0].currency"},
                "legacy_response": {"order.id": "$.orders[0].id", "order.total": "$.orders[0].total_price",
                                    "order.currency": "$.orders[0].currency"},
            },
            "refunds.create": {
                "method": "POST", "path": "/orders/{{ params.order_id }}/refunds.json", "read_only": False,
                "idempotency_header": "Idempotency-Key", "response": {"refund_id": "$.refund.id"},
                "legacy_response": {"refund.id": "$.refund.id"},
            },
        },
    }
}


@pytest.fixture
def catalog() -> dict:
    return CATALOG


def check(text: str, filename: str = "p.yaml") -> list[Problem]:
    """Parse, normalize and validate dedented ``text`` with the inline catalog."""
    doc = parse_document(textwrap.dedent(text).lstrip("\n"), filename)
    return validate(normalize(doc, CATALOG), CATALOG)
