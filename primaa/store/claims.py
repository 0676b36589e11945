"""The claim: Pending → Running for the oldest jobs, all of them or some algorithms'
only (a dispatcher claims CPU-bound and I/O-bound jobs each up to its own room, so
that it never holds jobs it cannot start soon).

Every read is an index range cut at ``limit``, whatever the backlog: the oldest
``limit`` Pending jobs, or the oldest ``limit`` of each algorithm named, of which the
oldest ``limit`` are taken. A filter that excludes algorithms first lists the
algorithms of the Pending jobs (one index seek each) and claims those it admits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from primaa.jobs.model import JobStatus
from primaa.jobs.storage import AlgorithmFilter
from primaa.store.index_walk import distinct_values
from primaa.store.rows import Rows
from primaa.store.sql_connection import SqlConnection
from primaa.store.tables import jobs

_PENDING: Final = JobStatus.PENDING.value
_RUNNING: Final = JobStatus.RUNNING.value
_ORDER: Final = (jobs.c.created_at, jobs.c.job_id)
_NONE_CLAIMED: Final = Rows(tuple(jobs.c.keys()), [])


class Claims:
    """The claim statements of one store, built once per filter."""

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._statements: dict[tuple[str, ...] | None, sa.Update] = {}

    def run(
        self, conn: SqlConnection, algorithms: AlgorithmFilter | None, params: Mapping[str, Any]
    ) -> Rows:
        """Claim in the caller's transaction; ``params``: limit, lease_to, expires, now."""
        if algorithms is None:
            return Rows.of(conn.execute(self._statement(None), params))
        names = algorithms.names
        if algorithms.excluding:
            # Not an index range: list the Pending jobs' algorithms instead of reading
            # past every Pending job of the excluded ones (90 ms for 98,000 of them on
            # PostgreSQL 15).
            pending = conn.execute(PENDING_ALGORITHMS, {"pending": _PENDING}).scalars()
            names = frozenset(name for name in pending if algorithms.admits(name))
        if not names:
            return _NONE_CLAIMED
        return Rows.of(conn.execute(self._statement(tuple(sorted(names))), params))

    def _statement(self, names: tuple[str, ...] | None) -> sa.Update:
        statement = self._statements.get(names)
        if statement is None:
            statement = claim_statement(self._dialect, names)
            if len(self._statements) < 64:  # excluding filters may name any algorithms
                self._statements[names] = statement
        return statement


def claim_statement(dialect: str, names: Sequence[str] | None = None) -> sa.Update:
    """Pending → Running for the oldest ``limit`` jobs (of ``names``), in one statement.

    PostgreSQL: a materialised CTE picks the rows once and locks them with
    ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take different jobs instead
    of queueing on the same ones. (As a plain ``IN (subquery)`` the planner may
    rescan the subquery per row and claim more than ``limit``.)
    SQLite: one writer at a time, so the statement alone is atomic.
    """
    update = jobs.update().values(
        status=_RUNNING,
        lease_owner=sa.bindparam("lease_to"),
        lease_expires_at=sa.bindparam("expires"),
        started_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        attempts=jobs.c.attempts + 1,
        progress_percent=0.0,
    )
    picked = _oldest() if names is None else _oldest_of(names)
    if dialect == "postgresql":
        if names is not None:
            # FOR UPDATE cannot lock through a UNION: lock the picked rows themselves.
            picked = sa.select(jobs.c.job_id).where(
                jobs.c.job_id.in_(picked.scalar_subquery()), jobs.c.status == _PENDING
            )
        locked = picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        update = update.where(jobs.c.job_id == locked.c.job_id, jobs.c.status == _PENDING)
    else:
        # Only Pending jobs were picked and the statement is atomic: checking the
        # status again would lead SQLite to read every Pending job's index entry
        # instead of looking the picked ones up by key.
        update = update.where(jobs.c.job_id.in_(picked.scalar_subquery()))
    return update.returning(*jobs.columns)


def _oldest() -> sa.Select[tuple[str]]:
    return (
        sa.select(jobs.c.job_id)
        .where(jobs.c.status == _PENDING)
        .order_by(*_ORDER)
        .limit(sa.bindparam("limit"))
    )


def _oldest_of(names: Sequence[str]) -> sa.Select[tuple[str]]:
    """The oldest ``limit`` of the oldest ``limit`` Pending jobs of each algorithm.

    Each algorithm's are one range of ``ix_jobs_status_algorithm_created_at``, read
    in order and cut at ``limit``; only those few rows are sorted. An ``IN`` over
    the names would instead sort every Pending job of them, or read the Pending
    jobs in claim order past all the other algorithms', whichever the planner
    guesses cheaper.
    """
    heads = [
        sa.select(jobs.c.job_id, jobs.c.created_at)
        .where(jobs.c.status == _PENDING, jobs.c.algorithm == sa.bindparam(f"algorithm_{n}", name))
        .order_by(*_ORDER)
        .limit(sa.bindparam("limit"))
        .subquery(f"head_{n}")
        for n, name in enumerate(names)
    ]
    candidates = sa.union_all(*(sa.select(head.c.job_id, head.c.created_at) for head in heads))
    found = candidates.subquery("candidates")
    return (
        sa.select(found.c.job_id)
        .order_by(found.c.created_at, found.c.job_id)
        .limit(sa.bindparam("limit"))
    )


def _pending_algorithms() -> sa.Select[Any]:
    """The algorithms of the Pending jobs, one seek each in the index on (status, algorithm)."""
    walk = distinct_values(
        jobs,
        "algorithm",
        lambda probe: probe.c.status == sa.bindparam("pending"),
        "pending_algorithms",
    )
    return sa.select(walk.c.algorithm).where(walk.c.algorithm.is_not(None))


PENDING_ALGORITHMS: Final = _pending_algorithms()
