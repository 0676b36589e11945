"""One service per SQLite file: ``primaa serve`` holds a lock beside the database.

SQLite's store assumes it is the only writer (at start-up every Running job and
claimed callback is a previous run's, and is handed back): a second service on
the same file would take the first one's jobs from under it. The lock is an
``flock`` on ``<database>.lock``, released by the kernel when the process ends,
however it ends; the file keeps the holder's pid for the message.
"""

from __future__ import annotations

import os
from pathlib import Path


class DatabaseInUse(Exception):
    """Another service holds the SQLite database; the message says how to fix it."""


def hold_sqlite_database(database: Path) -> int | None:
    """Lock ``database`` for this process; the returned descriptor must stay open as long
    as the service runs (``None`` where ``flock`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the operator's care it is.
        return None
    database.parent.mkdir(parents=True, exist_ok=True)
    path = database.with_name(database.name + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DatabaseInUse(
            f"another primaa service (pid {holder}) uses the SQLite database {database};"
            " stop it, or give this one another --data-dir or PRIMAA_DATABASE_URL"
            " (several services on one database need PostgreSQL)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
