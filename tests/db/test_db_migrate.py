"""A database made by an earlier version gains the columns added since (db/migrate.py): every
process starts on it, and the rows it holds read with the columns' declared defaults."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from db.engine import make_engine, session_scope
from db.errors import StoreError
from db.knowledge import create_article, get_article
from db.migrate import add_missing_columns, missing_columns
from db.models import InboundMessage
from db.channels import accept_inbound
from db.tenants import create_tenant

# columns this version added to tables that existed before it
ADDED = [("knowledge_articles", "questions"), ("conversation_messages", "message_id"),
         ("inbound_messages", "kind"), ("inbound_messages", "attachments"),
         ("inbound_messages", "next_attempt_at"), ("inbound_messages", "failed_at")]


def columns(engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_an_older_database_gains_the_new_columns_and_keeps_its_rows(database_url):
    engine = make_engine(database_url)
    with session_scope(engine) as s:
        tenant, _ = create_tenant(s, "Acme")
        create_article(s, tenant.id, "Hours", "We open at 9.", article_id="hours", questions=["when do you open?"])
        assert accept_inbound(s, tenant_id=tenant.id, channel="sms", external_id="SM1", thread="t1",
                              text="hi", customer={}, message_id="SM1")
        s.commit()
    with engine.begin() as conn:  # what the earlier version's tables looked like
        for table, column in ADDED:
            conn.exec_driver_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    assert {(t, c.name) for t, c in missing_columns(engine)} == set(ADDED)
    engine.dispose()

    engine = make_engine(database_url)  # the new version starting on it
    try:
        assert missing_columns(engine) == []
        assert {"questions"} <= columns(engine, "knowledge_articles")
        with session_scope(engine) as s:
            article = get_article(s, tenant.id, "hours")
            assert article.body == "We open at 9." and article.questions == []  # the declared default
            row = s.exec(select(InboundMessage)).one()
            assert (row.kind, row.attachments, row.failed_at, row.text) == ("message", [], None, "hi")
        assert add_missing_columns(engine) == []  # a second process starting finds nothing to do
    finally:
        engine.dispose()


def test_a_missing_column_without_a_default_is_named_not_guessed(database_url):
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql('ALTER TABLE "inbound_messages" DROP COLUMN "message_id"')
        with pytest.raises(StoreError, match="inbound_messages lacks column message_id"):
            add_missing_columns(engine)
    finally:
        engine.dispose()
