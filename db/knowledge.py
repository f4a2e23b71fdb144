"""Knowledge base store: versioned articles (immutable rows), sources and their uploads.

Every change of an article is a new version (a delete too: a version with `deleted=True`).
Writing the same content as the newest version creates nothing (idempotent), and two
concurrent writers cannot take the same version number: the unique key decides, the loser retries.
NUL characters are stripped from everything stored (PostgreSQL text cannot hold them; they carry
nothing readable), whichever way the text came in. An article's example questions
(`questions`, routing only) are part of its content: changing them is a new version.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import UTC, datetime
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import Conflict, Invalid, NotFound
from db.models import KnowledgeArticle, KnowledgeSource, KnowledgeUpload, utcnow
from db.writes import commit_or_conflict, insert_ignore
from knowledge.extract_common import clean_questions

_WRITE_ATTEMPTS = 5
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
SOURCE_STATUSES = ("pending", "running", "succeeded", "failed", "deleting", "deleted")
REMOVED_STATUSES = ("deleting", "deleted")
EMPTY_PROGRESS = {"pages_seen": 0, "pages_indexed": 0, "articles_changed": 0, "errors": 0}


def strip_nul(text: str | None) -> str | None:
    """``text`` without NUL characters (None stays None)."""
    return text.replace("\x00", "") if text and "\x00" in text else text


# ---- ids and hashes ------------------------------------------------------------------------

def slug(text: str, limit: int = 48) -> str:
    """Lowercase ASCII letters, digits and '-' (may be empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:limit].strip("-")


def new_article_id(title: str) -> str:
    """Slug of the title plus a short random suffix ("reset-your-password-3f9a1c")."""
    return f"{slug(title) or 'article'}-{secrets.token_hex(3)}"


def check_article_id(article_id: str) -> str:
    """A client-provided id: lowercase letters, digits, '.', '_', '-' (Invalid otherwise)."""
    if not ID_PATTERN.match(article_id):
        raise Invalid(f"article id {article_id!r} must be 1-128 characters of a-z, 0-9, '.', '_', '-' "
                      "starting with a letter or digit")
    return article_id


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def page_article_id(url: str) -> str:
    """Deterministic article id of a crawled page: slug of its path + hash of the whole URL."""
    parts = urlsplit(url)
    readable = slug(parts.path, 40) or slug(parts.hostname or "", 40) or "page"
    return f"web-{readable}-{_short_hash(url)}"


def file_article_id(filename: str) -> str:
    """Deterministic article id of an uploaded file: re-uploading a file updates its article."""
    stem = PurePosixPath(filename.replace("\\", "/")).name
    return f"file-{slug(stem, 40) or 'file'}-{_short_hash(stem)}"


def path_article_id(relative_path: str) -> str:
    """Deterministic article id of a file added from a folder (`flywheel knowledge add`), from its
    path inside the folder: a top-level file gets the id an upload of it would get, a nested one
    (two `index.md` in different folders) one of its own."""
    rel = PurePosixPath(relative_path.replace("\\", "/"))
    if len(rel.parts) <= 1:
        return file_article_id(rel.name)
    return f"file-{slug(str(rel.with_suffix('')), 40) or 'file'}-{_short_hash(str(rel))}"


def article_sha256(title: str, body: str, url: str | None, deleted: bool = False,
                   questions: list[str] | None = None, handoff: bool = False) -> str:
    """Hash of an article version's content (what decides whether a write is a change). An
    article without example questions (or not a hand-off one) hashes as before they existed,
    so writing the same content again (a re-crawl, `knowledge add`) still creates nothing."""
    parts = ["deleted" if deleted else "live", title, url or "", body]
    if questions:
        parts.append("\x1e".join(questions))
    if handoff:
        parts.append("handoff")
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def check_questions(questions: list[str] | None) -> list[str]:
    """An article's example questions, cleaned (`knowledge.extract_common.clean_questions`:
    at most 20, each at most 300 characters, none empty); Invalid says which is wrong."""
    try:
        return clean_questions(questions)
    except ValueError as err:
        raise Invalid(str(err)) from None


# ---- articles ------------------------------------------------------------------------------

def _has_nul(*values: str | None) -> bool:
    """A key with NUL names nothing stored (and PostgreSQL refuses it even in a WHERE clause)."""
    return any(value and "\x00" in value for value in values)


def _newest(session: Session, tenant_id: str, article_id: str) -> KnowledgeArticle | None:
    if _has_nul(article_id):
        return None
    stmt = (
        select(KnowledgeArticle)
        .where(KnowledgeArticle.tenant_id == tenant_id, KnowledgeArticle.article_id == article_id)
        .order_by(KnowledgeArticle.version.desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def _insert_next(
    session: Session, tenant_id: str, article_id: str, *, title: str, body: str, url: str | None,
    source_id: str | None, deleted: bool, note: str | None, only_if_new: bool = False,
    questions: list[str] | None = None, handoff: bool = False,
) -> tuple[KnowledgeArticle, bool]:
    title, body, url, note = strip_nul(title) or "", strip_nul(body) or "", strip_nul(url), strip_nul(note)
    questions = check_questions(questions)
    handoff = bool(handoff) and not deleted
    if handoff and not questions:
        raise Invalid("a hand-off article needs questions: the ones to hand to a person")
    sha = article_sha256(title, body, url, deleted, questions, handoff)
    for _ in range(_WRITE_ATTEMPTS):
        latest = _newest(session, tenant_id, article_id)
        if latest is not None and only_if_new:
            raise Conflict(f"article {article_id!r} already exists")
        if latest is not None and latest.sha256 == sha:
            return latest, False
        row = KnowledgeArticle(
            tenant_id=tenant_id, article_id=article_id, version=(latest.version if latest else 0) + 1,
            title=title, body=body, url=url or None, questions=questions, source_id=source_id,
            sha256=sha, deleted=deleted, handoff=handoff, note=note,
        )
        if insert_ignore(session, row, ["tenant_id", "article_id", "version"]):
            return get_article_version(session, tenant_id, article_id, row.version), True
        if only_if_new:
            raise Conflict(f"article {article_id!r} already exists")
    raise Conflict(f"article {article_id!r} is being changed concurrently; retry")


def create_article(
    session: Session, tenant_id: str, title: str, body: str, url: str | None = None,
    article_id: str | None = None, source_id: str | None = None, questions: list[str] | None = None,
    handoff: bool = False,
) -> KnowledgeArticle:
    """Version 1 of a new article (id generated from the title unless given); Conflict if the
    given id exists."""
    if article_id is None:
        article_id = new_article_id(title)
    else:
        check_article_id(article_id)
    return _insert_next(session, tenant_id, article_id, title=title, body=body, url=url,
                        source_id=source_id, deleted=False, note=None, only_if_new=True,
                        questions=questions, handoff=handoff)[0]


def save_article(
    session: Session, tenant_id: str, article_id: str, title: str, body: str, url: str | None = None,
    *, source_id: str | None = None, note: str | None = None, questions: list[str] | None = None,
    handoff: bool = False,
) -> tuple[KnowledgeArticle, bool]:
    """Store the content (example questions included: none when not given) as the next version;
    (newest, False) when it equals the newest version. Creates the article when it does not
    exist (upsert)."""
    check_article_id(article_id)
    return _insert_next(session, tenant_id, article_id, title=title, body=body, url=url,
                        source_id=source_id, deleted=False, note=note, questions=questions,
                        handoff=handoff)


def update_article(
    session: Session, tenant_id: str, article_id: str, title: str, body: str, url: str | None = None,
    questions: list[str] | None = None, handoff: bool = False,
) -> tuple[KnowledgeArticle, bool]:
    """Like save_article, for an article that must exist (NotFound otherwise; a deleted article
    comes back with the new content)."""
    if _newest(session, tenant_id, article_id) is None:
        raise NotFound(f"article {article_id!r} not found")
    return save_article(session, tenant_id, article_id, title, body, url, questions=questions,
                        handoff=handoff)


def delete_article(session: Session, tenant_id: str, article_id: str,
                   note: str | None = None) -> tuple[KnowledgeArticle, bool]:
    """Publish a "deleted" version (title/url kept, empty body, no questions); (newest, False) if
    already deleted."""
    latest = _newest(session, tenant_id, article_id)
    if latest is None:
        raise NotFound(f"article {article_id!r} not found")
    if latest.deleted:
        return latest, False
    return _insert_next(session, tenant_id, article_id, title=latest.title, body="", url=latest.url,
                        source_id=latest.source_id, deleted=True, note=note or "deleted")


def rollback_article(session: Session, tenant_id: str, article_id: str, version: int) -> tuple[KnowledgeArticle, bool]:
    """Publish an old version's content again as the newest version (unchanged if it already is)."""
    old = get_article_version(session, tenant_id, article_id, version)
    if old.deleted:
        raise Invalid(f"version {version} of article {article_id!r} is a deletion; roll back to a version "
                      "with content")
    return _insert_next(session, tenant_id, article_id, title=old.title, body=old.body, url=old.url,
                        source_id=old.source_id, deleted=False, note=f"rollback of v{version}",
                        questions=list(old.questions or []), handoff=bool(old.handoff))


def get_article_version(session: Session, tenant_id: str, article_id: str, version: int) -> KnowledgeArticle:
    """One version (deleted versions included), or NotFound."""
    if _has_nul(article_id):
        raise NotFound(f"article {article_id!r} version {version} not found")
    row = session.exec(
        select(KnowledgeArticle).where(
            KnowledgeArticle.tenant_id == tenant_id,
            KnowledgeArticle.article_id == article_id,
            KnowledgeArticle.version == version,
        )
    ).first()
    if row is None:
        raise NotFound(f"article {article_id!r} version {version} not found")
    return row


def get_article(session: Session, tenant_id: str, article_id: str, *, include_deleted: bool = False) -> KnowledgeArticle:
    """The newest version; NotFound when it never existed or (unless include_deleted) is deleted."""
    row = _newest(session, tenant_id, article_id)
    if row is None or (row.deleted and not include_deleted):
        raise NotFound(f"article {article_id!r} not found" + (" (deleted)" if row is not None else ""))
    return row


def list_article_versions(session: Session, tenant_id: str, article_id: str) -> list[KnowledgeArticle]:
    """Every version, oldest first; NotFound if the article never existed."""
    if _has_nul(article_id):
        raise NotFound(f"article {article_id!r} not found")
    rows = list(session.exec(
        select(KnowledgeArticle)
        .where(KnowledgeArticle.tenant_id == tenant_id, KnowledgeArticle.article_id == article_id)
        .order_by(KnowledgeArticle.version)
    ))
    if not rows:
        raise NotFound(f"article {article_id!r} not found")
    return rows


def list_articles(session: Session, tenant_id: str, *, source_id: str | None = None,
                  include_deleted: bool = False) -> list[KnowledgeArticle]:
    """The newest version of each article of the tenant (of one source if given), by id."""
    if _has_nul(source_id):
        return []
    newest = (
        select(KnowledgeArticle.article_id, func.max(KnowledgeArticle.version).label("version"))
        .where(KnowledgeArticle.tenant_id == tenant_id)
        .group_by(KnowledgeArticle.article_id)
        .subquery()
    )
    stmt = (
        select(KnowledgeArticle)
        .join(newest, (KnowledgeArticle.article_id == newest.c.article_id)
              & (KnowledgeArticle.version == newest.c.version))
        .where(KnowledgeArticle.tenant_id == tenant_id)
        .order_by(KnowledgeArticle.article_id)
    )
    if source_id is not None:
        stmt = stmt.where(KnowledgeArticle.source_id == source_id)
    if not include_deleted:
        stmt = stmt.where(KnowledgeArticle.deleted == False)
    return list(session.exec(stmt))


def mark_indexed(session: Session, tenant_id: str, article_id: str, version: int) -> None:
    """Record that `version` of the article is what the index holds now."""
    row = get_article_version(session, tenant_id, article_id, version)
    if row.indexed_at is None:
        row.indexed_at = utcnow()
        session.add(row)
        session.commit()


# ---- sources -------------------------------------------------------------------------------

def new_source_id() -> str:
    return f"src-{secrets.token_hex(6)}"


def ingest_workflow_id(tenant_id: str, source_id: str) -> str:
    return f"ingest/{tenant_id}/{source_id}"


def create_source(
    session: Session, tenant_id: str, type: str, *, url: str | None = None, filename: str | None = None,
    max_pages: int = 50, max_depth: int = 3, resync_every_s: int | None = None,
    source_id: str | None = None,
) -> KnowledgeSource:
    """A new pending source (id generated unless given); Conflict if the id is taken."""
    if type not in ("url", "file"):
        raise Invalid(f"source type must be 'url' or 'file', not {type!r}")
    source_id = source_id or new_source_id()
    row = KnowledgeSource(
        tenant_id=tenant_id, source_id=source_id, type=type, url=strip_nul(url), filename=strip_nul(filename),
        max_pages=max_pages, max_depth=max_depth, status="pending", progress=dict(EMPTY_PROGRESS),
        resync_every_s=resync_every_s, workflow_id=ingest_workflow_id(tenant_id, source_id),
    )
    session.add(row)
    commit_or_conflict(session, f"source {source_id!r} already exists")
    return row


def get_source(session: Session, tenant_id: str, source_id: str) -> KnowledgeSource:
    if _has_nul(source_id):
        raise NotFound(f"source {source_id!r} not found")
    row = session.exec(
        select(KnowledgeSource).where(KnowledgeSource.tenant_id == tenant_id,
                                      KnowledgeSource.source_id == source_id)
    ).first()
    if row is None:
        raise NotFound(f"source {source_id!r} not found")
    return row


def list_sources(session: Session, tenant_id: str, *, include_deleted: bool = False) -> list[KnowledgeSource]:
    """The tenant's sources, newest first (deleted ones only with ``include_deleted``)."""
    stmt = select(KnowledgeSource).where(KnowledgeSource.tenant_id == tenant_id)
    if not include_deleted:
        stmt = stmt.where(KnowledgeSource.status != "deleted")
    return list(session.exec(stmt.order_by(KnowledgeSource.created_at.desc(), KnowledgeSource.id.desc())))


def update_source(
    session: Session, tenant_id: str, source_id: str, *, status: str | None = None,
    progress: dict | None = None, error: str | None = None, clear_error: bool = False,
) -> KnowledgeSource:
    """Record a source's status/progress/error (idempotent: writing the same values again is
    harmless). A source being deleted stays "deleting" until it is "deleted", whatever an
    ingestion cycle still finishing records."""
    if status is not None and status not in SOURCE_STATUSES:
        raise Invalid(f"unknown source status {status!r}")
    row = get_source(session, tenant_id, source_id)
    if status is not None and not (row.status in REMOVED_STATUSES and status not in REMOVED_STATUSES):
        row.status = status
    if progress is not None:
        row.progress = dict(progress)
    if error is not None or clear_error:
        row.error = strip_nul(error)
    row.updated_at = datetime.now(UTC)
    session.add(row)
    session.commit()
    return row


def record_collect_progress(session: Session, tenant_id: str, source_id: str, counts: dict) -> str:
    """Merge a running crawl's counts into the source's progress; returns the source's status
    (the crawl stops when it says the source is being deleted)."""
    row = get_source(session, tenant_id, source_id)
    if row.status not in REMOVED_STATUSES:
        row.progress = {**(row.progress or {}), **counts}
        row.updated_at = datetime.now(UTC)
        session.add(row)
        session.commit()
    return row.status


def add_upload(session: Session, tenant_id: str, source_id: str, seq: int, filename: str,
               content_type: str | None, data: bytes) -> bool:
    """Store the bytes of the seq-th file of a source (a retry inserts nothing)."""
    row = KnowledgeUpload(tenant_id=tenant_id, source_id=source_id, seq=seq, filename=strip_nul(filename) or "",
                          content_type=strip_nul(content_type), sha256=hashlib.sha256(data).hexdigest(), data=data)
    return insert_ignore(session, row, ["tenant_id", "source_id", "seq"])


def list_uploads(session: Session, tenant_id: str, source_id: str) -> list[KnowledgeUpload]:
    """The files of a source, in upload order."""
    if _has_nul(source_id):
        return []
    return list(session.exec(
        select(KnowledgeUpload)
        .where(KnowledgeUpload.tenant_id == tenant_id, KnowledgeUpload.source_id == source_id)
        .order_by(KnowledgeUpload.seq)
    ))
