"""The backends of the store contract (memory, SQLite, PostgreSQL), for every store test module."""

from tests.store.test_store_contract import backend, sql_backend, store

__all__ = ["backend", "sql_backend", "store"]
