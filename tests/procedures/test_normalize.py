"""Original-design shape (spec §6) normalized to version 1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from procedures.errors import ProcedureError
from procedures.loader import load_procedure
from procedures.normalize import snake_case, strip_placeholders
from conftest import CATALOG

ORIGINAL = Path(__file__).resolve().parents[2] / "examples" / "refund-original.json"


def test_refund_original_becomes_valid_v1():
    d = load_procedure(ORIGINAL.read_text(), "refund-original.json", CATALOG)
    assert d["procedure"] == "refund" and d["title"] == "Process Refund Request"
    assert d["trigger"] == {"intents": ["refund_request"]} and "enabled" not in d
    steps = {s["id"]: s for s in d["steps"]}
    assert [s["id"] for s in d["steps"]] == ["user_context", "step1", "step2", "step3_approval",
                                            "step4_execute", "step5_confirm"]
    assert steps["user_context"] == {"id": "user_context", "type": "set",
                                     "set": {"user": "{{ conversation.customer or inputs }}"}}
    assert steps["step1"] == {"id": "step1", "type": "lookup", "connector": "shopify", "operation": "orders.get",
                              "params": {"email": "{{user.email}}"}, "next": "step2",
                              "assign": CATALOG["shopify"]["operations"]["orders.get"]["legacy_response"]}
    assert steps["step2"]["type"] == "switch"
    assert steps["step2"]["cases"] == [{"when": "order.total > 100", "goto": "step3_approval"}]
    assert steps["step2"]["default"] == "step4_execute"
    assert steps["step3_approval"]["timeout"] == "72h"
    assert steps["step3_approval"]["approvers"] == ["manager@company.com"]
    assert steps["step4_execute"]["type"] == "action"
    assert steps["step4_execute"]["params"] == {"order_id": "{{order.id}}"}
    assert steps["step4_execute"]["assign"] == {"refund.id": "$.refund.id"}
    assert steps["step5_confirm"] == {"id": "step5_confirm", "type": "message",
                                      "text": "Your refund of ${{order.total}} has been processed."}


def test_problems_point_into_the_original_file():
    data = json.loads(ORIGINAL.read_text())
    data["steps"][3]["config"]["dataConnector"] = "shopfy"
    text = json.dumps(data, indent=2)
    with pytest.raises(ProcedureError) as info:
        load_procedure(text, "o.json", CATALOG)
    (problem,) = info.value.problems
    line = next(i for i, l in enumerate(text.splitlines(), 1) if '"shopfy"' in l)
    assert (problem.rule, problem.step_id, problem.line) == ("unknown-connector", "step4_execute", line)


def test_no_user_step_without_user_and_v1_untouched():
    doc = {"id": "greet-flow", "name": "Greet", "trigger": {"type": "manual"},
           "steps": [{"id": "s1", "type": "message", "config": {"message": "Hi {{inputs.name}}"}}]}
    d = load_procedure(json.dumps(doc), "g.json", CATALOG)
    assert d == {"procedure": "greet-flow", "title": "Greet",
                 "steps": [{"id": "s1", "type": "message", "text": "Hi {{inputs.name}}"}]}
    v1 = "procedure: greet-flow\nsteps:\n  - {id: s1, type: message, text: hi}\n"
    assert load_procedure(v1, "g.yaml") == {"procedure": "greet-flow",
                                            "steps": [{"id": "s1", "type": "message", "text": "hi"}]}


def test_helpers():
    assert snake_case("orderId") == "order_id" and snake_case("refundAmountUSD") == "refund_amount_usd"
    assert strip_placeholders("{{ order.total }} > {{limit}}") == "order.total > limit"


def test_step_response_mapping_is_source_path_to_target_name():
    """Spec §6: `orders[0].total_price` -> `order.total` (like connector `endpoints` mappings)."""
    doc = {"id": "order-total", "name": "Order total", "trigger": {"type": "manual"}, "steps": [
        {"id": "find", "type": "data_lookup", "nextStep": "tell",
         "config": {"dataConnector": "shopify", "query": "orders.get", "params": {"email": "{{inputs.email}}"},
                    "responseMapping": {"orders[0].total_price": "order.total", "$.orders[0].id": "order.id"}}},
        {"id": "tell", "type": "message", "config": {"template": "Total {{order.total}} of {{order.id}}"}},
    ]}
    d = load_procedure(json.dumps(doc), "o.json", CATALOG)
    assert d["steps"][0]["assign"] == {"order.total": "$.orders[0].total_price", "order.id": "$.orders[0].id"}
    from connectors.jsonpaths import map_paths
    assert map_paths(d["steps"][0]["assign"], {"orders": [{"id": 7, "total_price": "12.50"}]}) == \
        {"order.total": "12.50", "order.id": 7}


def test_bad_step_response_mapping_points_at_what_the_author_wrote():
    text = ('{"id": "order-total", "name": "T", "steps": [\n'
            ' {"id": "find", "type": "data_lookup", "config": {"dataConnector": "shopify", "query": "orders.get",\n'
            '  "responseMapping": {"orders[0": "order.total",\n'
            '                      "orders[0].id": "Order Id"}}}]}')
    with pytest.raises(ProcedureError) as info:
        load_procedure(text, "o.json", CATALOG)
    found = sorted((p.rule, p.line, p.column) for p in info.value.problems)
    assert found == [("bad-jsonpath", 3, 23), ("bad-name", 4, 39)], [p.format() for p in info.value.problems]
    with pytest.raises(ProcedureError) as info:
        load_procedure(text.replace('{"orders[0": "order.total",\n                      "orders[0].id": "Order Id"}',
                                    '["order.total"]'), "o.json", CATALOG)
    assert [p.rule for p in info.value.problems] == ["field-type"]


def test_the_original_examples_normalize_as_before():
    """The spec's example and ours are the same document, and they normalize to the same definition."""
    spec_example = Path("/work/shared/spec/examples/refund-original.json")
    ours = load_procedure(ORIGINAL.read_text(), "refund-original.json", CATALOG)
    if spec_example.exists():
        assert load_procedure(spec_example.read_text(), "refund-original.json", CATALOG) == ours
    assert ours["steps"][1]["assign"] == CATALOG["shopify"]["operations"]["orders.get"]["legacy_response"]


@pytest.mark.parametrize("kind", [["keyword"], {"a": 1}, 3, None])
def test_wrong_typed_original_trigger_type_is_a_problem_not_a_crash(kind):
    doc = {"id": "greet-flow", "name": "Greet", "trigger": {"type": kind, "condition": "hi"},
           "steps": [{"id": "s1", "type": "message", "config": {"message": "Hi"}}]}
    with pytest.raises(ProcedureError) as info:
        load_procedure(json.dumps(doc), "g.json", CATALOG)
    assert {p.rule for p in info.value.problems} == {"unknown-field"}


@pytest.mark.parametrize("stype", ["_init__", "_class__", "_strings", "converters"])
def test_original_step_types_never_reach_internal_methods(stype):
    doc = {"id": "greet-flow", "name": "Greet",
           "steps": [{"id": "s1", "type": stype, "config": {"message": "Hi"}}]}
    with pytest.raises(ProcedureError) as info:
        load_procedure(json.dumps(doc), "g.json", CATALOG)
    assert [p.rule for p in info.value.problems] == ["unknown-type"]
