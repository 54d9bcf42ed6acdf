"""The run store: SQLite (WAL) for records plus content-addressed image blobs, and the lock
that lets one process at a time change a run."""

from datasetagent.store.blobs import BlobStore
from datasetagent.store.db import Candidate, RunStore, SearchQuery, WebInfo
from datasetagent.store.lock import LOCK_NAME, run_lock

__all__ = ["LOCK_NAME", "BlobStore", "Candidate", "RunStore", "SearchQuery", "WebInfo", "run_lock"]
