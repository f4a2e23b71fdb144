"""Columns added to existing tables since a database was created.

`SQLModel.metadata.create_all` creates missing tables but never changes existing ones, so a
database made by an earlier version would lack the columns added since (a laptop's
`.flywheel/flywheel.db`, a deployment's PostgreSQL) and fail at the first query that names them.
`add_missing_columns` adds each missing column with the default its model declares (existing
rows get that value), so every process can start on an older database. It only ever adds:
columns are never dropped, renamed or retyped here. Safe when several processes start at once
(a column another process just added is taken as done).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from db.errors import StoreError


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    return "'" + str(value).replace("'", "''") + "'"


def _default(column: Any) -> str | None:
    """The SQL literal of a column's declared default, or None when it has none."""
    default = column.default
    if default is None:
        return None
    if getattr(default, "is_callable", False):
        value = default.arg(None)  # SQLAlchemy wraps a default factory to take a context
    elif getattr(default, "is_scalar", False):
        value = default.arg
    else:
        return None
    return None if value is None else _literal(value)


def missing_columns(engine: Engine) -> list[tuple[str, Any]]:
    """(table name, column) of every model column its existing table lacks."""
    inspector = inspect(engine)
    tables = set(inspector.get_table_names())
    missing = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in tables:
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend((table.name, column) for column in table.columns if column.name not in have)
    return missing


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the model columns existing tables lack; returns "table.column" of each one added."""
    added = []
    for table, column in missing_columns(engine):
        default = _default(column)
        if not column.nullable and default is None:
            raise StoreError(f"table {table} lacks column {column.name}, which has no default to fill "
                             f"existing rows with: add it by hand")
        sql = (f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {column.type.compile(dialect=engine.dialect)}'
               + (f" DEFAULT {default}" if default is not None else "")
               + ("" if column.nullable else " NOT NULL"))
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(sql)
        except DBAPIError:
            if (table, column.name) in {(t, c.name) for t, c in missing_columns(engine)}:
                raise  # not another process's addition: a real failure
            continue
        added.append(f"{table}.{column.name}")
    return added
