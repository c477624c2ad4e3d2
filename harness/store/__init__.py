"""The store: all SQL. The harness's tables beside Optuna's (``tables``), storage URLs (``urls``), opening a
database read-write or read-only (``connect``), many writers on one database (``concurrency``), exactly-once
trial bookkeeping (``claims``) and read-only SQL (``readonly_sql``)."""

from harness.store.connect import open_store
from harness.store.tables import Store

__all__ = ["Store", "open_store"]
