"""Database errors that mean "cannot write now", as the jobs core's StorageUnavailable.

A full disk or a read-only database is not a bug: clients get 507 or 503 with
Retry-After, and the service retries its own final writes until space returns.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from sqlalchemy.exc import DBAPIError

from primaa.jobs.errors import StorageUnavailable

#: PostgreSQL's SQLSTATEs for a full disk, and for a read-only transaction or server.
_PG_FULL: Final = frozenset({"53100", "53200"})
_PG_READ_ONLY: Final = frozenset({"25006"})


def storage_error(exc: DBAPIError) -> StorageUnavailable | None:
    """The StorageUnavailable that ``exc`` means, if it means one."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            return StorageUnavailable("the disk is full", full=True)
        if code == sqlite3.SQLITE_READONLY:
            return StorageUnavailable("the database is read-only", full=False)
        if code == sqlite3.SQLITE_IOERR:
            return StorageUnavailable(f"disk I/O error ({orig})", full=False)
        return None
    cause = getattr(orig, "__cause__", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    if sqlstate in _PG_FULL:
        return StorageUnavailable("the database server's disk is full", full=True)
    if sqlstate in _PG_READ_ONLY:
        return StorageUnavailable("the database is read-only", full=False)
    return None
