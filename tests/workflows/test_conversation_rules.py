"""The conversation workflow's pure rules: which messages ask for a person, and how a message's
text is cleaned and cut before it is numbered and projected."""
from __future__ import annotations

import pytest

from workflows import conversation_types as C
from workflows.conversation import asks_for_person

REQUESTS = [
    "Can I talk to a real person please?", "please connect me to a human", "I want to speak to an agent",
    "talk to someone", "human please", "agent", "Representative!", "I need a human",
    "Let me chat with a person", "Is there anyone I can talk to?", "Can you transfer me to customer service?",
    "put me through to an operator", "I'd like to speak with your manager", "real person please",
    "Can I get a live agent?", "I want a human, not a bot", "speak to someone from your team",
    "I'd like to talk to a person", "operator", "A real person please!", "I need to speak to somebody",
]
MENTIONS = [
    "The customs agent wants a fee", "Can a person other than me collect my parcel?", "my operator is Vodafone",
    "Is the seller a human?", "My travel agent booked the wrong dates", "Does a real person check the returns?",
    "I'm a real person, not a robot", "Can someone else sign for the delivery?",
    "Please ask the delivery person to ring twice", "Our estate agent sent the package",
    "The human resources department ordered this", "I need someone to pick up the return", "agent@example.com",
    "I talked to your agent yesterday and he said the refund is coming", "Which courier operator delivers in Spain?",
    "we need a person to sign for it", "The person at the door was rude", "hello again, anyone?",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_a_request_for_a_person_is_recognised(text):
    assert asks_for_person(text)


@pytest.mark.parametrize("text", MENTIONS)
def test_a_mere_mention_of_a_person_is_not_a_request(text):
    assert not asks_for_person(text)


def test_clean_text_drops_what_no_column_can_hold_and_keeps_lines_and_tabs():
    assert C.clean_text("order\x00 1001\x07\r\nline two\rthree\tcol") == "order 1001\nline two\nthree\tcol"
    assert C.clean_text("lone \ud800surrogate") == "lone surrogate"
    assert C.clean_text("caf\u00e9 \U0001F600") == "caf\u00e9 \U0001F600"


def test_truncate_cuts_with_a_visible_marker():
    long = "x" * (C.MAX_TEXT + 500)
    cut = C.truncate(long)
    assert len(cut) == C.MAX_TEXT and cut.endswith(C.TRUNCATED)
    assert C.truncate("short") == "short"


def test_clean_attachments_keeps_well_formed_ones_only():
    items = [{"content_type": "image/jpeg", "url": "https://api.twilio.com/m/1"}, {"url": ""}, "junk",
             {"content_type": 5, "url": "https://x.example/2"}] + [{"url": f"https://x/{i}"} for i in range(20)]
    cleaned = C.clean_attachments(items)
    assert cleaned[0] == {"content_type": "image/jpeg", "url": "https://api.twilio.com/m/1"}
    assert cleaned[1] == {"content_type": "", "url": "https://x.example/2"}
    assert len(cleaned) == C.MAX_ATTACHMENTS
