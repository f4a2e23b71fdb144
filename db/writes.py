"""Portable write helpers: insert-if-absent on a unique key, commit mapping duplicates to Conflict."""
from __future__ import annotations


from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from db.errors import Conflict, StoreError

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def dialect_insert(session: Session):
    """The INSERT construct of the session's database (with ON CONFLICT); PostgreSQL and SQLite."""
    dialect = session.get_bind().dialect.name
    insert = _INSERTS.get(dialect)
    if insert is None:
        raise StoreError(f"unsupported database dialect {dialect!r}")
    return insert


def insert_ignore(session: Session, row: SQLModel, keys: list[str]) -> bool:
    """INSERT `row` unless a row with the same unique `keys` exists (the DB decides, atomically).

    Commits; returns True when the row was inserted, False when the key already existed.
    """
    insert = dialect_insert(session)
    values = {k: v for k, v in row.model_dump().items() if not (k == "id" and v is None)}
    table = type(row).__table__
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
    # RETURNING tells reliably whether the row went in (rowcount is not reported by every driver).
    inserted = session.execute(stmt.returning(table.c[keys[0]])).first() is not None
    session.commit()
    return inserted


def insert_many_ignore(session: Session, model: type[SQLModel], rows: list[dict], keys: list[str]) -> int:
    """INSERT the `rows` of `model` whose unique `keys` are absent, in one statement, WITHOUT
    committing (the caller commits, so it can be one transaction with other writes); returns how
    many went in."""
    if not rows:
        return 0
    insert = dialect_insert(session)
    table = model.__table__
    stmt = insert(table).values(rows).on_conflict_do_nothing(index_elements=keys).returning(table.c[keys[0]])
    return len(session.execute(stmt).all())


def upsert_statement(session: Session, model: type[SQLModel], values: dict, keys: list[str], changes: dict):
    """INSERT `values`, or on a conflict of the unique `keys` UPDATE the row with `changes` (one
    statement)."""
    insert = dialect_insert(session)
    return insert(model.__table__).values(**values).on_conflict_do_update(index_elements=keys, set_=changes)


def commit_or_conflict(session: Session, message: str) -> None:
    """Commit; a unique/foreign-key violation rolls back and becomes Conflict(message)."""
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(message) from exc
