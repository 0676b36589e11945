"""The distinct values of an indexed column by seeks, not by reading every row.

DISTINCT or GROUP BY reads every matching row, and a few values can stand for many rows
(a slow receiver's backlog of callbacks, an algorithm's queue of jobs). Seeking the next
value after the last one (a loose index scan) costs one index seek per value instead.
Both SQLite and PostgreSQL run it as a recursive CTE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


def distinct_values(
    table: sa.Table,
    column: str,
    where: Callable[[sa.FromClause], sa.ColumnElement[bool]],
    name: str,
) -> sa.CTE:
    """A recursive CTE ``name`` with one column, ``column``: its values among the rows of
    ``table`` that ``where`` admits, in order, then one NULL (callers leave it out).

    An index leading with ``where``'s equality columns and then ``column`` serves it.
    """

    def first_after(previous: sa.ColumnElement[Any] | None) -> sa.ScalarSelect[Any]:
        probe = table.alias(f"{name}_probe")
        query = sa.select(probe.c[column]).where(where(probe))
        if previous is not None:
            query = query.where(probe.c[column] > previous)
        return query.order_by(probe.c[column]).limit(1).scalar_subquery()

    walk = sa.select(first_after(None).label(column)).cte(name, recursive=True)
    return walk.union_all(sa.select(first_after(walk.c[column])).where(walk.c[column].is_not(None)))
