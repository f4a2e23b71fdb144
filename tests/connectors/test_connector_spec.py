"""normalize_connector: spec §5 shape, original-design shape (§6), rejected specs, catalog."""
import copy

import pytest

from connectors.catalog import builtin_connectors, catalog_for
from connectors.errors import ConnectorError
from connectors.spec import ConnectorSpecError, dotted, load_connector, normalize_connector

SPEC5 = {
    "connector": "shopify",
    "base_url": "https://{{ secrets.shop_domain }}/admin/api/2024-01",
    "auth": {"type": "header", "name": "X-Shopify-Access-Token", "value": "{{ secrets.shop_token }}"},
    "operations": {
        "orders.get": {
            "method": "GET", "path": "/orders.json", "query": {"email": "{{ params.email }}", "status": "any"},
            "read_only": True,
            "response": {"id": "$.orders[0].id", "total": "$.orders[0].total_price"},
        },
        "refunds.create": {
            "method": "POST", "path": "/orders/{{ params.order_id }}/refunds.json",
            "body": {"refund": {"note": "{{ params.note }}"}}, "idempotency_header": "Idempotency-Key",
        },
    },
}

LEGACY = {
    "id": "myshop",
    "provider": "shopify",
    "endpoints": [
        {"id": "orders.get", "method": "GET", "path": "/orders.json", "params": {"email": "{{email}}"},
         "responseMapping": {"orders[0].id": "order.id", "orders[0].total_price": "order.total"}},
        {"id": "refunds.create", "method": "POST", "path": "/orders/{orderId}/refunds.json", "params": ["note"],
         "responseMapping": {"refund.id": "refund.id"}},
    ],
}


def test_spec5_shape_defaults_and_secrets() -> None:
    spec = normalize_connector(copy.deepcopy(SPEC5))
    assert spec["secrets"] == ["shop_domain", "shop_token"]
    get, post = spec["operations"]["orders.get"], spec["operations"]["refunds.create"]
    assert get["read_only"] is True and post["read_only"] is False
    assert post["body_format"] == "json" and post["idempotency_header"] == "Idempotency-Key"
    assert get["legacy_response"] == {} and post["query"] == {}
    assert normalize_connector(spec) == spec  # idempotent


def test_original_design_shape_converted() -> None:
    spec = normalize_connector(copy.deepcopy(LEGACY))
    get = spec["operations"]["orders.get"]
    assert spec["connector"] == "myshop"
    assert spec["base_url"] == SPEC5["base_url"] and spec["auth"]["name"] == "X-Shopify-Access-Token"
    assert get["legacy_response"] == {"order.id": "$.orders[0].id", "order.total": "$.orders[0].total_price"}
    assert get["response"] == {"id": "$.orders[0].id", "total": "$.orders[0].total_price"}
    assert get["query"] == {"email": "{{ params.email }}"}
    post = spec["operations"]["refunds.create"]
    assert post["path"] == "/orders/{{ params.orderId }}/refunds.json"
    assert post["body"] == {"note": "{{ params.note }}"} and post["read_only"] is False


def _bad(mutate) -> dict:
    data = copy.deepcopy(SPEC5)
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(colour="red"), "unknown field"),
        (lambda d: d["operations"]["orders.get"].update(retries=3), "unknown field"),
        (lambda d: d["operations"]["orders.get"].update(method="FETCH"), "method"),
        (lambda d: d["operations"]["orders.get"]["response"].update(bad="$.orders[0"), "does not compile"),
        (lambda d: d["auth"].update(value="shpat_literal"), "inline"),
        (lambda d: d.update(auth={"type": "digest", "value": "{{ secrets.x }}"}), "type must be"),
        (lambda d: d.update(auth={"type": "bearer"}), "missing"),
        (lambda d: d["operations"]["orders.get"]["query"].update(x="{{ inputs.email }}"), "may only use"),
        (lambda d: d["operations"]["orders.get"].update(headers={"Authorization": "Bearer abc"}), "inline"),
        (lambda d: d.pop("base_url"), "base_url"),
        (lambda d: d.update(base_url="ftp://x"), "http"),
        (lambda d: d.update(operations={}), "operations"),
        (lambda d: d["operations"]["orders.get"].update(body_format="xml"), "json or form"),
        (lambda d: d["operations"].update({"Bad Name": {"method": "GET", "path": "/x"}}), "id must"),
        (lambda d: d["operations"]["orders.get"].update(path="orders.json"), "path"),
    ],
)
def test_bad_specs_rejected(mutate, fragment: str) -> None:
    with pytest.raises(ConnectorSpecError) as info:
        normalize_connector(_bad(mutate))
    assert info.value.name == "validation" and isinstance(info.value, ConnectorError)
    assert fragment in info.value.message


def test_bad_legacy_rejected() -> None:
    data = copy.deepcopy(LEGACY)
    data["endpoints"][0]["responseMapping"] = {"orders[0": "order.id"}
    with pytest.raises(ConnectorSpecError, match="does not compile"):
        normalize_connector(data)
    with pytest.raises(ConnectorSpecError, match="unknown field"):
        normalize_connector({**LEGACY, "endpoints": [{"id": "x", "path": "/x", "verb": "GET"}]})
    with pytest.raises(ConnectorSpecError, match="base_url"):
        normalize_connector({"id": "nobase", "endpoints": [{"id": "x", "path": "/x"}]})


def test_builtins_complete() -> None:
    specs = builtin_connectors()
    assert set(specs) == {"shopify", "stripe", "zendesk"}
    assert specs["shopify"]["secrets"] == ["shop_domain", "shop_token"]
    assert specs["stripe"]["operations"]["refunds.create"]["body_format"] == "form"
    assert specs["zendesk"]["auth"]["type"] == "basic"
    for spec in specs.values():
        for op in spec["operations"].values():
            assert op["legacy_response"] and op["response"]
    assert specs["shopify"]["operations"]["orders.get"]["legacy_response"]["order.total"] == "$.orders[0].total_price"
    specs["shopify"]["connector"] = "mutated"
    assert builtin_connectors()["shopify"]["connector"] == "shopify"


def test_catalog_for_merges_custom() -> None:
    catalog = catalog_for([copy.deepcopy(LEGACY)])
    assert {"shopify", "stripe", "zendesk", "myshop"} <= set(catalog)
    with pytest.raises(ConnectorSpecError):
        catalog_for([{"connector": "x"}])


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["operations"]["orders.get"]["query"].update(x="{{ params.a + }}"),
         ("operations", "orders.get", "query", "x"), "does not parse"),
        (lambda d: d["operations"]["orders.get"]["query"].update(x="{{ params.__class__ }}"),
         ("operations", "orders.get", "query", "x"), "'__class__' is not allowed"),
        (lambda d: d["operations"]["orders.get"]["query"].update(x="{{ params.a }}{{ os.environ }}"),
         ("operations", "orders.get", "query", "x"), "uses os"),
        (lambda d: d["operations"]["refunds.create"]["body"].update(all="{{ secrets }}"),
         ("operations", "refunds.create", "body", "all"), "must name one secret"),
        (lambda d: d["operations"]["refunds.create"].update(path="/x/{{ run.id }}"),
         ("operations", "refunds.create", "path"), "uses run; connector templates may only use `params` and"),
        (lambda d: d["operations"]["orders.get"]["query"].update(api_key="plainvalue"),
         ("operations", "orders.get", "query", "api_key"), "credential `api_key` is written inline"),
        (lambda d: d["operations"]["orders.get"].update(headers={"X-Access-Token": "abc123"}),
         ("operations", "orders.get", "headers", "X-Access-Token"), "written inline"),
        (lambda d: d["operations"]["orders.get"].update(headers={"X-Api-Key": "{{ secrets.k }}", "Client-Secret": "s"}),
         ("operations", "orders.get", "headers", "Client-Secret"), "written inline"),
        (lambda d: d.update(base_url="https://admin:hunter2@shop.example/api"), ("base_url",), "type: basic"),
        (lambda d: d["operations"]["orders.get"].update(path="/orders.json?token=abc"),
         ("operations", "orders.get", "path"), "`token` is written inline in the URL's query"),
        (lambda d: d["operations"]["orders.get"]["query"].update({"{{ params.k }}": "v"}),
         ("operations", "orders.get", "query", "{{ params.k }}"), "names are not templates"),
        (lambda d: d["operations"]["orders.get"].update(method=["GET"]), ("operations", "orders.get", "method"),
         "must be one of"),
        (lambda d: d["auth"].update(type=["header"]), ("auth", "type"), "type must be one of"),
    ],
)
def test_templates_and_credentials_are_checked_deeply(mutate, path, fragment) -> None:
    with pytest.raises(ConnectorSpecError) as info:
        normalize_connector(_bad(mutate))
    assert info.value.path == path
    assert info.value.message.startswith(dotted(path) + ": ") and fragment in info.value.message, info.value.message


def test_templated_and_secret_credentials_are_accepted() -> None:
    data = copy.deepcopy(SPEC5)
    data["base_url"] = "https://{{ secrets.user }}:{{ secrets.pw }}@{{ secrets.shop_domain }}/api"
    data["operations"]["orders.get"]["query"].update(api_key="{{ secrets.key }}", page_token="{{ params.cursor }}")
    data["operations"]["orders.get"]["headers"] = {"X-Api-Key": "{{ secrets.key }}", "Accept": "application/json"}
    spec = normalize_connector(data)
    assert spec["secrets"] == ["key", "pw", "shop_domain", "shop_token", "user"]


def test_problems_in_spec_text_are_located_by_line_and_column() -> None:
    text = """\
connector: returns
base_url: https://returns.example.com
operations:
  returns.status:
    method: GET
    path: /returns/{{ params.rma }}
    query:
      status: any
      api_key: abc123
"""
    with pytest.raises(ConnectorSpecError) as info:
        load_connector(text, "returns.yaml")
    assert (info.value.line, info.value.column) == (9, 16)
    assert info.value.message.startswith("returns.yaml:9:16: operations.returns.status.query.api_key: credential")
    with pytest.raises(ConnectorSpecError) as info:
        load_connector(text.replace("    query:", "    qurey:"), "returns.yaml")
    assert (info.value.line, info.value.column) == (7, 5) and "unknown field(s) qurey" in info.value.message
    with pytest.raises(ConnectorSpecError) as info:
        load_connector("connector: [x\n", "c.yaml")
    assert info.value.line == 2 and info.value.message.startswith("c.yaml:2:")
    with pytest.raises(ConnectorSpecError, match="c.yaml:1:1: connector: a connector spec must be a mapping"):
        load_connector("- a\n", "c.yaml")
    assert load_connector(text.replace("api_key: abc123", "api_key: \"{{ secrets.k }}\""))["secrets"] == ["k"]


def test_original_shape_problems_point_into_the_endpoints() -> None:
    text = """{"id": "myshop", "provider": "shopify", "endpoints": [
  {"id": "orders.get", "path": "/orders.json",
   "params": {"email": "{{email}}", "api_key": "plain"}}]}"""
    with pytest.raises(ConnectorSpecError) as info:
        load_connector(text, "myshop.json")
    assert info.value.path == ("endpoints", 0, "params", "api_key")
    assert (info.value.line, info.value.column) == (3, 48), info.value.message
    bad = copy.deepcopy(LEGACY)
    bad["endpoints"][1]["path"] = "/orders/{{ orderId + }}"
    with pytest.raises(ConnectorSpecError) as info:
        normalize_connector(bad)
    assert info.value.path == ("endpoints", 1, "path") and "does not parse" in info.value.message
