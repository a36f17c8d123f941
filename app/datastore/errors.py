"""Errors of the chunk store.

    DatastoreError
    ├── ChunkIntegrityError   a chunk failed verification: digest, GCM tag, position or length
    │   └── ChunkMissingError a chunk a manifest references is not in the object store
    └── KeyUnwrapError        a wrapped data key failed authentication (wrong KEK or context)

Object-store failures other than a missing chunk propagate as the store's own
`StorageError`s.
"""

from __future__ import annotations

__all__ = ["ChunkIntegrityError", "ChunkMissingError", "DatastoreError", "KeyUnwrapError"]


class DatastoreError(Exception):
    """Base of every chunk-store failure."""


class ChunkIntegrityError(DatastoreError):
    """Stored chunk bytes do not verify; none of its plaintext was returned."""


class ChunkMissingError(ChunkIntegrityError):
    """A referenced chunk object does not exist."""


class KeyUnwrapError(DatastoreError):
    """A wrapped key did not authenticate under the given KEK and context."""
