"""Chunks: the unit of the content-addressed store.

A stream is cut into `CHUNK_SIZE` chunks (the last one shorter). A manifest is just the
ordered `list[ChunkRef]` of a stream: one ref per position, an all-zero chunk included
(with `digest=None`; it is never stored).

Each stored chunk is an immutable object `chunks/<sha256 hex of the stored bytes>`:

* a plain chunk is stored as is, so its name is the hash of its plaintext and equal chunks
  of any stream share one object (dedup);
* a sealed chunk is stored as `nonce ‖ ciphertext ‖ tag`, and the random nonce makes every
  sealing different, so its name, the hash of those bytes, is unique: sealed chunks are
  never deduplicated. They are still shared by reference (a server made from an encrypted
  image reuses the image's manifest and wrapped key).

Zero chunks are elided for sealed streams too: the manifest (in the database, not in the
object store) thus reveals which 4 MiB ranges of an encrypted disk are all zero.

The functions here are blocking and CPU-bound; callers run them in worker threads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Final

from app.datastore.crypto import Opener, Sealer
from app.datastore.errors import ChunkIntegrityError

__all__ = [
    "CHUNK_PREFIX",
    "CHUNK_SIZE",
    "ChunkRef",
    "PreparedChunk",
    "WriteResult",
    "chunk_key",
    "is_zero",
    "open_stored",
    "prepare_chunk",
    "zeros",
]

CHUNK_SIZE: Final = 4 * 1024 * 1024
CHUNK_PREFIX: Final = "chunks/"


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One position of a manifest."""

    #: Position of the chunk in its stream, from 0.
    index: int
    #: sha256 hex of the stored object's bytes; None for an all-zero chunk (not stored).
    digest: str | None
    #: Plaintext length: CHUNK_SIZE except for a stream's last chunk.
    length: int

    @property
    def key(self) -> str | None:
        """Object key of the chunk, None for a zero chunk."""
        return None if self.digest is None else chunk_key(self.digest)


@dataclass(frozen=True, slots=True)
class WriteResult:
    chunks: list[ChunkRef]
    #: Plaintext bytes in the stream.
    size: int
    #: `sha256:<hex>` of the whole plaintext stream.
    checksum: str
    #: Stored bytes of the objects this write created (that did not exist before it).
    new_bytes: int


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """A chunk ready to store: `stored` is None (and `digest` too) for a zero chunk."""

    digest: str | None
    stored: bytes | bytearray | None  # a sealed chunk is built in a bytearray


def chunk_key(digest: str) -> str:
    return CHUNK_PREFIX + digest


@cache
def _zero_block() -> bytes:
    # calloc'd: untouched pages cost nothing, and reading them maps the shared zero page.
    return bytes(CHUNK_SIZE)


def zeros(length: int) -> bytes:
    """`length` zero bytes, `0 <= length <= CHUNK_SIZE`, without allocating a full chunk."""
    return _zero_block()[:length]


def is_zero(data: bytes) -> bool:
    """Whether a chunk is all zero: one memcmp, stopping at the first non-zero byte."""
    # Only a stream's last chunk is short, so slicing (copying) the zero block is rare.
    return data == zeros(len(data))


def prepare_chunk(index: int, plaintext: bytes, sealer: Sealer | None) -> PreparedChunk:
    """Elide, seal and hash one chunk."""
    if is_zero(plaintext):
        return PreparedChunk(digest=None, stored=None)
    stored = plaintext if sealer is None else sealer.seal(index, plaintext)
    return PreparedChunk(digest=hashlib.sha256(stored).hexdigest(), stored=stored)


def open_stored(ref: ChunkRef, stored: bytes, opener: Opener | None) -> bytes:
    """Verify a stored chunk against its ref and return its plaintext.

    Raises ChunkIntegrityError, having returned nothing, when the bytes are not those the
    ref names, when a sealed chunk does not authenticate at its position, or when the
    plaintext length differs from the ref's.
    """
    if ref.digest is None:
        raise ValueError("a zero chunk has no stored bytes")
    if hashlib.sha256(stored).hexdigest() != ref.digest:
        raise ChunkIntegrityError(f"chunk {ref.index} does not match its digest {ref.digest}")
    plaintext = stored if opener is None else opener.open(ref.index, stored)
    if len(plaintext) != ref.length:
        raise ChunkIntegrityError(
            f"chunk {ref.index} holds {len(plaintext)} bytes, its manifest says {ref.length}"
        )
    return plaintext
