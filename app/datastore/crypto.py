"""AES-256-GCM sealing of chunks and envelope wrapping of data keys.

A sealed chunk is `nonce(12) ‖ ciphertext ‖ tag(16)`. Its associated data binds it to the
id of its data key and to its position in the stream, so a chunk moved to another position
or read under another key id fails authentication, not only a chunk whose bytes changed.

Nonces are random 96-bit values; NIST SP 800-38D allows 2**32 random-nonce encryptions per
key. One data key seals an image's chunks (a 128 GiB image is 32768 chunks) and, since servers
and volumes made from an encrypted image reuse its wrapped key (DESIGN §1), every chunk later
written to those disks: 2**32 chunks of 4 MiB would be 16 PiB sealed under one key.

`Sealer` and `Opener` hold one data key (and its cipher context) for a whole stream; their
repr never shows the key.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.datastore.errors import ChunkIntegrityError, KeyUnwrapError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "SEAL_OVERHEAD",
    "TAG_SIZE",
    "Opener",
    "Sealer",
    "chunk_aad",
    "open_chunk",
    "seal_chunk",
    "unwrap_key",
    "wrap_key",
]

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
#: Bytes a sealed chunk has beyond its plaintext.
SEAL_OVERHEAD: Final = NONCE_SIZE + TAG_SIZE

_CHUNK_AAD_PREFIX: Final = b"ims-chunk-v1|"
_KEY_AAD_PREFIX: Final = b"ims-key-v1|"
_MAX_INDEX: Final = 2**64 - 1


def _checked(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"an AES-256 key is {KEY_SIZE} bytes, got {len(key)}")
    return key


def _cipher(key: bytes) -> AESGCM:
    return AESGCM(_checked(key))


def chunk_aad(key_id: str, index: int) -> bytes:
    """Associated data of the chunk at `index` of a stream sealed with data key `key_id`."""
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"chunk index out of range: {index}")
    return _CHUNK_AAD_PREFIX + key_id.encode() + b"|" + index.to_bytes(8, "big")


def _seal(cipher: AESGCM, aad: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + cipher.encrypt(nonce, plaintext, aad)


def _seal_into(key: bytes, aad: bytes, plaintext: bytes) -> bytearray:
    """`nonce ‖ ciphertext ‖ tag` (what `_seal` gives) built in one buffer: the ciphertext is
    written in place after the nonce, not returned in a buffer of its own and then copied
    behind it (a chunk's 4 MiB once more)."""
    nonce = os.urandom(NONCE_SIZE)
    size = len(plaintext)
    # update_into asks for room for a block less one byte beyond the input: the tag's place.
    sealed = bytearray(NONCE_SIZE + size + TAG_SIZE)
    sealed[:NONCE_SIZE] = nonce
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    with memoryview(sealed) as view:
        if encryptor.update_into(plaintext, view[NONCE_SIZE:]) != size:
            raise RuntimeError("AES-GCM wrote less than its input")
        encryptor.finalize()
        view[NONCE_SIZE + size :] = encryptor.tag
    return sealed


def _open(cipher: AESGCM, aad: bytes, sealed: bytes | bytearray) -> bytes:
    if len(sealed) < SEAL_OVERHEAD:
        raise InvalidTag
    view = memoryview(sealed)
    return cipher.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)


def seal_chunk(data_key: bytes, key_id: str, index: int, plaintext: bytes) -> bytearray:
    """Encrypt one chunk: `nonce ‖ ciphertext ‖ tag`, bound to `key_id` and `index`."""
    return _seal_into(_checked(data_key), chunk_aad(key_id, index), plaintext)


def open_chunk(data_key: bytes, key_id: str, index: int, sealed: bytes | bytearray) -> bytes:
    """Decrypt one chunk sealed by `seal_chunk` with the same key, key id and index.

    Raises ChunkIntegrityError when anything differs; no plaintext is returned then.
    """
    try:
        return _open(_cipher(data_key), chunk_aad(key_id, index), sealed)
    except InvalidTag:
        raise ChunkIntegrityError(f"chunk {index} failed authentication") from None


def wrap_key(kek: bytes, plaintext_key: bytes, context: bytes) -> bytes:
    """Encrypt a data key under a key-encryption key; `context` must be given to unwrap it."""
    return _seal(_cipher(kek), _KEY_AAD_PREFIX + context, plaintext_key)


def unwrap_key(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Inverse of `wrap_key`; raises KeyUnwrapError on a wrong KEK, context or any tamper."""
    try:
        return _open(_cipher(kek), _KEY_AAD_PREFIX + context, wrapped)
    except InvalidTag:
        raise KeyUnwrapError("wrapped key failed authentication") from None


class _DataKey:
    __slots__ = ("_key", "key_id")

    def __init__(self, data_key: bytes, key_id: str) -> None:
        self._key = bytes(_checked(data_key))
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r})"


class Sealer(_DataKey):
    """Seals the chunks of one stream with one data key. Thread-safe."""

    __slots__ = ()

    def seal(self, index: int, plaintext: bytes) -> bytearray:
        return _seal_into(self._key, chunk_aad(self.key_id, index), plaintext)


class Opener(_DataKey):
    """Opens the chunks of one stream sealed with one data key. Thread-safe."""

    __slots__ = ("_cipher",)

    def __init__(self, data_key: bytes, key_id: str) -> None:
        super().__init__(data_key, key_id)
        self._cipher = _cipher(self._key)

    def open(self, index: int, sealed: bytes | bytearray) -> bytes:
        try:
            return _open(self._cipher, chunk_aad(self.key_id, index), sealed)
        except InvalidTag:
            raise ChunkIntegrityError(f"chunk {index} failed authentication") from None
