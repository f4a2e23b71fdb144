"""Knowledge store: versioned articles, deletes, rollback, sources and uploads (SQLite and
PostgreSQL through the `session` fixture)."""
from __future__ import annotations

import pytest

from db.errors import Conflict, Invalid, NotFound
from db.knowledge import (
    add_upload,
    article_sha256,
    create_article,
    create_source,
    delete_article,
    file_article_id,
    get_article,
    get_article_version,
    get_source,
    list_article_versions,
    list_articles,
    list_sources,
    list_uploads,
    mark_indexed,
    page_article_id,
    path_article_id,
    record_collect_progress,
    rollback_article,
    save_article,
    update_article,
    update_source,
)


def test_create_generates_slug_ids_and_refuses_taken_ids(session, tenant):
    a = create_article(session, tenant.id, "Reset your password!", "Click *Forgot*.")
    assert a.version == 1 and a.article_id.startswith("reset-your-password-") and not a.deleted
    assert a.sha256 == article_sha256("Reset your password!", "Click *Forgot*.", None)
    b = create_article(session, tenant.id, "Shipping", "3 days", "https://h/s", article_id="shipping")
    assert (b.article_id, b.url) == ("shipping", "https://h/s")
    with pytest.raises(Conflict):
        create_article(session, tenant.id, "Other", "x", article_id="shipping")
    with pytest.raises(Invalid):
        create_article(session, tenant.id, "Bad", "x", article_id="Not Valid/../")


def test_every_change_is_a_new_immutable_version(session, tenant):
    create_article(session, tenant.id, "Refunds", "30 days", article_id="refunds")
    row, created = update_article(session, tenant.id, "refunds", "Refunds", "30 days")
    assert (row.version, created) == (1, False)  # same content: nothing new
    row, created = update_article(session, tenant.id, "refunds", "Refunds", "14 days")
    assert (row.version, created) == (2, True)
    assert get_article(session, tenant.id, "refunds").body == "14 days"
    assert get_article_version(session, tenant.id, "refunds", 1).body == "30 days"
    assert [v.version for v in list_article_versions(session, tenant.id, "refunds")] == [1, 2]
    with pytest.raises(NotFound):
        update_article(session, tenant.id, "missing", "x", "y")
    with pytest.raises(NotFound):
        get_article_version(session, tenant.id, "refunds", 9)


def test_delete_is_a_version_and_rollback_republishes(session, tenant):
    create_article(session, tenant.id, "Refunds", "30 days", article_id="refunds")
    update_article(session, tenant.id, "refunds", "Refunds", "14 days")
    gone, created = delete_article(session, tenant.id, "refunds")
    assert (gone.version, gone.deleted, created) == (3, True, True)
    assert delete_article(session, tenant.id, "refunds")[1] is False  # idempotent
    with pytest.raises(NotFound):
        get_article(session, tenant.id, "refunds")
    assert get_article(session, tenant.id, "refunds", include_deleted=True).version == 3
    assert list_articles(session, tenant.id) == []
    assert [r.article_id for r in list_articles(session, tenant.id, include_deleted=True)] == ["refunds"]

    back, created = rollback_article(session, tenant.id, "refunds", 1)
    assert (back.version, back.body, back.deleted, back.note, created) == (4, "30 days", False, "rollback of v1", True)
    assert rollback_article(session, tenant.id, "refunds", 1)[1] is False  # already the newest content
    with pytest.raises(Invalid):
        rollback_article(session, tenant.id, "refunds", 3)  # a deletion has no content
    with pytest.raises(NotFound):
        delete_article(session, tenant.id, "never")


def test_save_article_upserts_and_lists_newest_per_source(session, tenant, other_tenant):
    url = "https://help.example.com/articles/returns?x=1"
    aid = page_article_id(url)
    assert aid == page_article_id(url) and aid.startswith("web-articles-returns-")
    assert file_article_id("docs/Guide.md") == file_article_id("Guide.md")
    first, created = save_article(session, tenant.id, aid, "Returns", "v1 text", url, source_id="src-1")
    assert created and first.version == 1
    assert save_article(session, tenant.id, aid, "Returns", "v1 text", url, source_id="src-1")[1] is False
    second, created = save_article(session, tenant.id, aid, "Returns", "v2 text", url, source_id="src-1")
    assert created and second.version == 2
    save_article(session, tenant.id, "manual", "Manual", "body")
    save_article(session, other_tenant.id, aid, "Theirs", "other tenant", url, source_id="src-1")

    assert [(r.article_id, r.version) for r in list_articles(session, tenant.id, source_id="src-1")] == [(aid, 2)]
    assert {r.article_id for r in list_articles(session, tenant.id)} == {aid, "manual"}
    assert get_article(session, other_tenant.id, aid).title == "Theirs"  # tenants never mix


def test_mark_indexed(session, tenant):
    row = create_article(session, tenant.id, "A", "b", article_id="a")
    assert row.indexed_at is None
    mark_indexed(session, tenant.id, "a", 1)
    mark_indexed(session, tenant.id, "a", 1)
    assert get_article(session, tenant.id, "a").indexed_at is not None


def test_sources_and_uploads(session, tenant, other_tenant):
    src = create_source(session, tenant.id, "url", url="https://help.example.com/", max_pages=20,
                        resync_every_s=86400)
    assert src.status == "pending" and src.workflow_id == f"ingest/{tenant.id}/{src.source_id}"
    assert src.progress == {"pages_seen": 0, "pages_indexed": 0, "articles_changed": 0, "errors": 0}
    with pytest.raises(Conflict):
        create_source(session, tenant.id, "url", url="https://x/", source_id=src.source_id)
    with pytest.raises(Invalid):
        create_source(session, tenant.id, "ftp")
    files = create_source(session, tenant.id, "file", filename="a.md")

    progress = {"pages_seen": 3, "pages_indexed": 1, "articles_changed": 2, "errors": 0}
    update_source(session, tenant.id, src.source_id, status="running", progress=progress)
    row = get_source(session, tenant.id, src.source_id)
    assert (row.status, row.progress, row.error) == ("running", progress, None)
    update_source(session, tenant.id, src.source_id, status="failed", error="boom")
    assert get_source(session, tenant.id, src.source_id).error == "boom"
    with pytest.raises(Invalid):
        update_source(session, tenant.id, src.source_id, status="exploded")
    with pytest.raises(NotFound):
        get_source(session, other_tenant.id, src.source_id)
    assert {s.source_id for s in list_sources(session, tenant.id)} == {src.source_id, files.source_id}
    assert list_sources(session, other_tenant.id) == []

    assert add_upload(session, tenant.id, files.source_id, 0, "a.md", "text/markdown", b"# A\n\nbody")
    assert not add_upload(session, tenant.id, files.source_id, 0, "a.md", "text/markdown", b"# A\n\nbody")
    add_upload(session, tenant.id, files.source_id, 1, "b.pdf", None, b"%PDF-1.4 \x00\xff")
    ups = list_uploads(session, tenant.id, files.source_id)
    assert [(u.seq, u.filename, u.data) for u in ups] == [(0, "a.md", b"# A\n\nbody"), (1, "b.pdf", b"%PDF-1.4 \x00\xff")]
    assert list_uploads(session, other_tenant.id, files.source_id) == []


def test_nul_characters_are_stripped_from_everything_stored(session, tenant):
    row = create_article(session, tenant.id, "Re\x00turns", "Body\x00 with NUL", "https://h/\x00x",
                         article_id="nul")
    assert (row.title, row.body, row.url) == ("Returns", "Body with NUL", "https://h/x")
    assert row.sha256 == article_sha256("Returns", "Body with NUL", "https://h/x")
    same, created = save_article(session, tenant.id, "nul", "Returns\x00", "Body with NUL", "https://h/x")
    assert (same.version, created) == (1, False)  # the NUL made no difference
    src = create_source(session, tenant.id, "file", filename="a\x00.md")
    assert add_upload(session, tenant.id, src.source_id, 0, "a\x00.md", "text/markdown\x00", b"x\x00y")
    up = list_uploads(session, tenant.id, src.source_id)[0]
    assert (up.filename, up.content_type, up.data) == ("a.md", "text/markdown", b"x\x00y")  # bytes kept as is
    failed = update_source(session, tenant.id, src.source_id, status="failed", error="bad\x00file")
    assert (get_source(session, tenant.id, src.source_id).filename, failed.error) == ("a.md", "badfile")


def test_path_article_ids_are_stable_and_distinct(session, tenant):
    assert path_article_id("gift-cards.md") == file_article_id("gift-cards.md")  # as an upload of it
    assert path_article_id("a/index.md") != path_article_id("b/index.md")
    assert path_article_id("a/index.md") == path_article_id("a\\index.md")
    for rel in ("gift-cards.md", "a/index.md", "Déjà vu/Ünïcode file.md", "x" * 300 + ".md"):
        save_article(session, tenant.id, path_article_id(rel), "T", "b")  # a valid id


def test_source_deletion_states_and_listing(session, tenant):
    src = create_source(session, tenant.id, "url", url="https://help.example.com/")
    other = create_source(session, tenant.id, "url", url="https://other.example.com/")
    assert record_collect_progress(session, tenant.id, src.source_id, {"pages_fetched": 3, "pages_seen": 2}) == "pending"
    assert get_source(session, tenant.id, src.source_id).progress == {
        "pages_seen": 2, "pages_indexed": 0, "articles_changed": 0, "errors": 0, "pages_fetched": 3}
    update_source(session, tenant.id, src.source_id, status="deleting")
    # a cycle still finishing cannot bring the source back
    assert update_source(session, tenant.id, src.source_id, status="succeeded").status == "deleting"
    assert record_collect_progress(session, tenant.id, src.source_id, {"pages_fetched": 9}) == "deleting"
    assert get_source(session, tenant.id, src.source_id).progress["pages_fetched"] == 3
    update_source(session, tenant.id, src.source_id, status="deleted")
    assert update_source(session, tenant.id, src.source_id, status="running").status == "deleted"
    assert [s.source_id for s in list_sources(session, tenant.id)] == [other.source_id]
    assert {s.source_id for s in list_sources(session, tenant.id, include_deleted=True)} == {
        src.source_id, other.source_id}


def test_example_questions_are_versioned_content(session, tenant):
    questions = ["How long do refunds take?", "where is my money"]
    row = create_article(session, tenant.id, "Refunds", "5 days", article_id="refunds",
                         questions=[" How long do refunds\n take? ", "where is my money", "WHERE IS MY MONEY"])
    assert (row.version, row.questions) == (1, questions)  # cleaned: spaces collapsed, repeats once
    assert row.sha256 == article_sha256("Refunds", "5 days", None, questions=questions)
    # an article without questions hashes as before they existed (re-adding it creates nothing)
    assert article_sha256("A", "b", None, questions=[]) == article_sha256("A", "b", None)
    assert update_article(session, tenant.id, "refunds", "Refunds", "5 days", questions=questions)[1] is False
    changed, created = update_article(session, tenant.id, "refunds", "Refunds", "5 days",
                                      questions=questions[:1])
    assert (changed.version, changed.questions, created) == (2, questions[:1], True)
    cleared, _ = update_article(session, tenant.id, "refunds", "Refunds", "5 days")  # omitted: none
    assert (cleared.version, cleared.questions) == (3, [])
    back, _ = rollback_article(session, tenant.id, "refunds", 1)
    assert (back.version, back.questions) == (4, questions)
    gone, _ = delete_article(session, tenant.id, "refunds")
    assert (gone.version, gone.questions) == (5, [])
    assert [v.questions for v in list_article_versions(session, tenant.id, "refunds")] == [
        questions, questions[:1], [], questions, []]
    saved, _ = save_article(session, tenant.id, "gifts", "Gifts", "Cards", questions=["Do cards expire?"])
    assert get_article(session, tenant.id, "gifts").questions == ["Do cards expire?"] == saved.questions


@pytest.mark.parametrize("questions", [["q"] * 21, [""], ["x" * 301], "one text", [3]])
def test_bad_example_questions_change_nothing(session, tenant, questions):
    with pytest.raises(Invalid):
        create_article(session, tenant.id, "New", "body", article_id="new", questions=questions)
    create_article(session, tenant.id, "Old", "body", article_id="old", questions=["fine?"])
    with pytest.raises(Invalid):
        update_article(session, tenant.id, "old", "Old", "other body", questions=questions)
    with pytest.raises(NotFound):
        get_article(session, tenant.id, "new")
    assert [(v.version, v.body, v.questions) for v in list_article_versions(session, tenant.id, "old")] == [
        (1, "body", ["fine?"])]


def test_handoff_is_versioned_content_and_needs_questions(session, tenant):
    questions = ["Do you assemble furniture?"]
    row = create_article(session, tenant.id, "Not covered", "note", article_id="nc", questions=questions,
                         handoff=True)
    assert row.handoff and row.sha256 == article_sha256("Not covered", "note", None, questions=questions, handoff=True)
    assert row.sha256 != article_sha256("Not covered", "note", None, questions=questions)
    assert update_article(session, tenant.id, "nc", "Not covered", "note", questions=questions, handoff=True)[1] is False
    plain, created = update_article(session, tenant.id, "nc", "Not covered", "note", questions=questions)
    assert created and (plain.version, plain.handoff) == (2, False)
    back, _ = rollback_article(session, tenant.id, "nc", 1)
    assert (back.version, back.handoff) == (3, True)
    gone, _ = delete_article(session, tenant.id, "nc")
    assert (gone.version, gone.handoff) == (4, False)
    with pytest.raises(Invalid, match="needs questions"):
        create_article(session, tenant.id, "Empty", "note", article_id="empty", handoff=True)
    with pytest.raises(Invalid, match="needs questions"):
        save_article(session, tenant.id, "nc", "Not covered", "note", handoff=True)
    assert [v.version for v in list_article_versions(session, tenant.id, "nc")] == [1, 2, 3, 4]
