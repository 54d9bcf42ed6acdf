"""The run store: SQLite (WAL) for records plus content-addressed image blobs."""

from datasetagent.store.blobs import BlobStore
from datasetagent.store.db import Candidate, RunStore

__all__ = ["BlobStore", "Candidate", "RunStore"]
