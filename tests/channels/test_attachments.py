"""Media reach the conversation as the message's attachments ({content_type, url}), through the
outbox row like any message (the adapters answer nothing themselves): Twilio MMS / WhatsApp
media, Slack shared files, Meta attachments. A replay records nothing more."""
from __future__ import annotations

from tests.channels.conftest import PUBLIC_URL, WA_NUMBER, meta_event, meta_headers, slack_event, slack_headers
from tests.channels.conftest import sms_form, twilio_headers

JPEG = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"


def test_twilio_media_become_attachments_of_the_message(client, tenant, store):
    path = f"/webhooks/{tenant.id}/twilio/whatsapp"
    form = sms_form("whatsapp:+15551230008", "", to=f"whatsapp:{WA_NUMBER}", NumMedia="3",
                    MediaUrl0=JPEG, MediaContentType0="image/jpeg",
                    MediaUrl1="http://insecure.example/x.png", MediaContentType1="image/png",  # not https: dropped
                    MediaUrl2=JPEG + "2", MediaContentType2="application/pdf")
    for _ in range(2):  # Twilio retrying
        r = client.post(path, data=form, headers=twilio_headers(PUBLIC_URL + path, form))
        assert r.status_code == 200 and "<Message" not in r.text, r.text
    [row] = store.outbox(tenant.id)
    assert (row.channel, row.thread, row.text, row.kind) == ("whatsapp", "15551230008", "", "message")
    assert row.attachments == [{"content_type": "image/jpeg", "url": JPEG},
                               {"content_type": "application/pdf", "url": JPEG + "2"}]
    with_text = sms_form("+15551230009", "here is the photo", NumMedia="1", MediaUrl0=JPEG,
                         MediaContentType0="image/jpeg")
    path = f"/webhooks/{tenant.id}/twilio/sms"
    assert client.post(path, data=with_text, headers=twilio_headers(PUBLIC_URL + path, with_text)).status_code == 200
    row = store.outbox(tenant.id)[-1]
    assert (row.text, row.attachments) == ("here is the photo", [{"content_type": "image/jpeg", "url": JPEG}])


def test_slack_files_and_meta_attachments_become_attachments(client, tenant, store):
    body = slack_event("", subtype="file_share", files=[
        {"mimetype": "image/png", "url_private": "https://files.slack.com/files-pri/T1-F1/shot.png"},
        {"mimetype": "text/plain", "url_private": "javascript:alert(1)"}])
    r = client.post(f"/webhooks/{tenant.id}/slack/events", content=body, headers=slack_headers(body))
    assert r.status_code == 200 and "conversation_id" in r.json(), r.text
    body = meta_event("", attachments=[{"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/v/p.jpg"}},
                                       {"type": "fallback", "payload": {}}])
    assert client.post(f"/webhooks/{tenant.id}/meta", content=body, headers=meta_headers(body)).text == "EVENT_RECEIVED"
    slack, meta = store.outbox(tenant.id)
    assert (slack.channel, slack.text, slack.attachments) == (
        "slack", "", [{"content_type": "image/png", "url": "https://files.slack.com/files-pri/T1-F1/shot.png"}])
    assert (meta.channel, meta.text, meta.attachments) == (
        "messenger", "", [{"content_type": "image", "url": "https://scontent.xx.fbcdn.net/v/p.jpg"}])
