"""What the raw SQL of coldmail.db shares: rows as dicts, and column lists taken from the models.

A column list built from a model follows it: a field added there is read by
every statement that uses the list, and one renamed or dropped fails at import.
"""

from __future__ import annotations

from typing import Any, Iterable

from peewee import Field, Model


def dicts(cursor) -> list[dict[str, Any]]:
    """Every row of `cursor`, as {column: value}."""
    names = [c.name for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def one(cursor) -> dict[str, Any] | None:
    """The first row of `cursor` as {column: value}, or None when there is none."""
    rows = dicts(cursor)
    return rows[0] if rows else None


def fields_but(model: type[Model], *left_out: Field) -> list[Field]:
    """The model's fields in their declared order (the table's), without `left_out`."""
    names = {field.name for field in left_out}  # by name: a Field's == builds an SQL expression
    return [field for field in model._meta.sorted_fields if field.name not in names]


def column_list(fields: Iterable[Field], *, prefix: str = "") -> str:
    """`a, b, c` (or `p.a, p.b, p.c` with prefix "p."): the columns of `fields`, in their order."""
    return ", ".join(prefix + field.column_name for field in fields)
