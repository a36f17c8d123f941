"""The data plane: a content-addressed chunk store over an `ObjectStore`.

Streams are cut into 4 MiB chunks stored as immutable objects named by the SHA-256 of
their stored bytes; a manifest is the ordered `list[ChunkRef]` of a stream. This package
knows nothing of the database: manifests and reference counts are kept by its callers.

    chunks    ChunkRef, WriteResult, naming, zero detection, per-chunk verification
    crypto    AES-256-GCM chunk sealing (Sealer, Opener) and data-key wrapping
    writer    ChunkWriter.write_stream: source stream -> stored chunks + manifest
    reader    read_stream: manifest -> verified plaintext (or a byte range of it)
    reseal    reseal: manifest -> new manifest under another key, bucket or store
    errors    the error tree
"""

from app.datastore._pipeline import ExistsCheck
from app.datastore.chunks import CHUNK_SIZE, ChunkRef, WriteResult, chunk_key
from app.datastore.crypto import Opener, Sealer, open_chunk, seal_chunk, unwrap_key, wrap_key
from app.datastore.errors import (
    ChunkIntegrityError,
    ChunkMissingError,
    DatastoreError,
    KeyUnwrapError,
)
from app.datastore.reader import read_stream
from app.datastore.reseal import reseal
from app.datastore.writer import ChunkWriter

__all__ = [
    "CHUNK_SIZE",
    "ChunkIntegrityError",
    "ChunkMissingError",
    "ChunkRef",
    "ChunkWriter",
    "DatastoreError",
    "ExistsCheck",
    "KeyUnwrapError",
    "Opener",
    "Sealer",
    "WriteResult",
    "chunk_key",
    "open_chunk",
    "read_stream",
    "reseal",
    "seal_chunk",
    "unwrap_key",
    "wrap_key",
]
