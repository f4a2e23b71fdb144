"""Slack replies are plain text for mrkdwn: &, < and > escaped in the text and in citation labels
and links, so no reply mentions @channel, forges a link or breaks a <url|label> link."""
from channels.slack import message_text, mrkdwn_escape


def test_reply_text_and_citations_are_escaped_for_mrkdwn():
    assert mrkdwn_escape("a <!channel> & <https://evil.example|click>") == \
        "a &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    text = message_text({"text": "Refunds take 5 days <!here>.", "citations": [
        {"title": "Refunds & returns <policy>", "url": "https://help.example.com/r?a=1&b=2"},
        {"title": "Pipes | in | titles", "url": "https://help.example.com/p|q"},
        {"title": "Internal note", "url": "javascript:alert(1)"},
        {"title": "", "url": ""}, "not a citation"]})
    assert text == ("Refunds take 5 days &lt;!here&gt;.\n\nSources:\n"
                    "[1] <https://help.example.com/r?a=1&amp;b=2|Refunds &amp; returns &lt;policy&gt;>\n"
                    "[2] <https://help.example.com/p%7Cq|Pipes \u2223 in \u2223 titles>\n"
                    "[3] Internal note")
    assert message_text({"text": "I'm connecting you with a person."}) == "I'm connecting you with a person."
