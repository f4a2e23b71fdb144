"""Web widget public keys -> tenants: an indexed, unique lookup kept in step with the web
channel's settings (rotation, a key claimed by another tenant, rows from before the table)."""
from __future__ import annotations

import pytest
from sqlmodel import delete, select

import channels.web as web  # registers the web channel's settings hooks
from channels.errors import ChannelError
from db.channels import put_channel
from db.models import WidgetKey


def key_of(session, tenant) -> str:
    return put_channel(session, None, tenant.id, "web", {"title": "Help"}, {}).settings["public_key"]


def test_a_configured_widget_is_found_by_its_key_and_a_rotated_key_stops_working(session, tenant):
    key = key_of(session, tenant)
    assert key.startswith("pk_")
    owner, settings = web.find_widget(session, key)
    assert owner == tenant.id and settings["title"] == "Help"
    assert web.find_widget(session, "pk_" + "x" * 22) is None

    new = put_channel(session, None, tenant.id, "web", {"title": "Help", "public_key": web.new_public_key()},
                      {}).settings["public_key"]
    assert new != key
    assert web.find_widget(session, key) is None
    assert web.find_widget(session, new)[0] == tenant.id
    assert [k.public_key for k in session.exec(select(WidgetKey))] == [new]


def test_a_key_of_another_tenant_cannot_be_claimed(session, tenant, other_tenant):
    key = key_of(session, tenant)
    with pytest.raises(ChannelError, match="used by another widget"):
        put_channel(session, None, other_tenant.id, "web", {"public_key": key}, {})
    session.rollback()
    assert web.find_widget(session, key)[0] == tenant.id
    assert web.find_widget(session, key_of(session, other_tenant))[0] == other_tenant.id


def test_widgets_configured_before_the_key_table_are_backfilled(session, tenant):
    key = key_of(session, tenant)
    session.exec(delete(WidgetKey))
    session.commit()
    assert session.get(WidgetKey, key) is None
    assert web.backfill_widget_keys(session) == 1
    assert web.backfill_widget_keys(session) == 0
    assert web.find_widget(session, key)[0] == tenant.id
