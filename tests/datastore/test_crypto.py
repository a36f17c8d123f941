from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.datastore import (
    ChunkIntegrityError,
    KeyUnwrapError,
    Opener,
    Sealer,
    open_chunk,
    seal_chunk,
    unwrap_key,
    wrap_key,
)
from app.datastore.crypto import NONCE_SIZE, SEAL_OVERHEAD, chunk_aad

KEY = bytes(range(32))
PLAINTEXT = b"a chunk of a disk image" * 100


def test_sealed_chunk_is_nonce_ciphertext_tag_and_opens() -> None:
    sealed = seal_chunk(KEY, "key-1", 3, PLAINTEXT)

    assert len(sealed) == len(PLAINTEXT) + SEAL_OVERHEAD
    assert PLAINTEXT not in sealed
    assert open_chunk(KEY, "key-1", 3, sealed) == PLAINTEXT


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4 * 1024 * 1024])
def test_a_sealed_chunk_is_exactly_the_aead_ciphertext_behind_its_nonce(size: int) -> None:
    """Sealing writes the ciphertext in place behind the nonce: the bytes are those of the
    one-shot AEAD (`ciphertext ‖ tag`) under that nonce, whatever the size."""
    plaintext = os.urandom(size)
    for sealed in (seal_chunk(KEY, "key-1", 7, plaintext), Sealer(KEY, "key-1").seal(7, plaintext)):
        nonce = bytes(sealed[:NONCE_SIZE])
        assert len(sealed) == size + SEAL_OVERHEAD
        assert sealed[NONCE_SIZE:] == AESGCM(KEY).encrypt(nonce, plaintext, chunk_aad("key-1", 7))


def test_every_sealing_uses_a_fresh_nonce() -> None:
    first, second = (seal_chunk(KEY, "key-1", 0, PLAINTEXT) for _ in range(2))

    assert first[:NONCE_SIZE] != second[:NONCE_SIZE]
    assert first != second


def test_associated_data_binds_key_id_and_position() -> None:
    assert chunk_aad("key-1", 258) == b"ims-chunk-v1|key-1|\x00\x00\x00\x00\x00\x00\x01\x02"


@pytest.mark.parametrize("position", [0, NONCE_SIZE - 1, NONCE_SIZE, 500, -SEAL_OVERHEAD + 11, -1])
def test_any_flipped_byte_fails(position: int) -> None:
    sealed = bytearray(seal_chunk(KEY, "key-1", 0, PLAINTEXT))
    sealed[position] ^= 0x80

    with pytest.raises(ChunkIntegrityError, match="chunk 0 failed authentication"):
        open_chunk(KEY, "key-1", 0, bytes(sealed))


@pytest.mark.parametrize(
    ("key", "key_id", "index"),
    [(KEY, "key-1", 1), (KEY, "key-2", 0), (bytes(32), "key-1", 0)],
    ids=["other position", "other key id", "other key"],
)
def test_opening_in_another_context_fails(key: bytes, key_id: str, index: int) -> None:
    sealed = seal_chunk(KEY, "key-1", 0, PLAINTEXT)

    with pytest.raises(ChunkIntegrityError):
        open_chunk(key, key_id, index, sealed)


@pytest.mark.parametrize("length", [0, 1, SEAL_OVERHEAD - 1])
def test_truncated_chunk_fails(length: int) -> None:
    sealed = seal_chunk(KEY, "key-1", 0, PLAINTEXT)

    with pytest.raises(ChunkIntegrityError):
        open_chunk(KEY, "key-1", 0, sealed[:length])


def test_sealer_and_opener_match_the_functions() -> None:
    sealed = Sealer(KEY, "key-1").seal(7, PLAINTEXT)

    assert open_chunk(KEY, "key-1", 7, sealed) == PLAINTEXT
    assert Opener(KEY, "key-1").open(7, seal_chunk(KEY, "key-1", 7, PLAINTEXT)) == PLAINTEXT
    with pytest.raises(ChunkIntegrityError):
        Opener(KEY, "key-1").open(8, sealed)


def test_key_holders_do_not_show_the_key() -> None:
    sealer = Sealer(KEY, "key-1")

    assert repr(sealer) == "Sealer(key_id='key-1')"
    assert repr(Opener(KEY, "key-1")) == "Opener(key_id='key-1')"
    assert not hasattr(sealer, "__dict__")


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33])
def test_only_256_bit_keys_are_accepted(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal_chunk(bytes(length), "key-1", 0, PLAINTEXT)
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(bytes(length), "key-1")


@pytest.mark.parametrize("index", [-1, 2**64])
def test_index_must_fit_eight_bytes(index: int) -> None:
    with pytest.raises(ValueError, match="index"):
        seal_chunk(KEY, "key-1", index, PLAINTEXT)


def test_wrapped_key_unwraps_with_its_kek_and_context() -> None:
    data_key = os.urandom(32)

    wrapped = wrap_key(KEY, data_key, b"account-1|key-1")

    assert data_key not in wrapped
    assert len(wrapped) == 32 + SEAL_OVERHEAD
    assert unwrap_key(KEY, wrapped, b"account-1|key-1") == data_key


@pytest.mark.parametrize(
    ("kek", "context", "flip"),
    [(bytes(32), b"ctx", None), (KEY, b"other", None), (KEY, b"ctx", 20)],
    ids=["other kek", "other context", "tampered"],
)
def test_unwrapping_fails_on_any_mismatch(kek: bytes, context: bytes, flip: int | None) -> None:
    wrapped = bytearray(wrap_key(KEY, os.urandom(32), b"ctx"))
    if flip is not None:
        wrapped[flip] ^= 1

    with pytest.raises(KeyUnwrapError):
        unwrap_key(kek, bytes(wrapped), context)


def test_a_wrapped_key_is_not_a_sealed_chunk() -> None:
    # Distinct associated-data prefixes keep the two uses of AES-GCM apart.
    wrapped = wrap_key(KEY, os.urandom(32), b"key-1|" + bytes(8))

    with pytest.raises(ChunkIntegrityError):
        open_chunk(KEY, "key-1", 0, wrapped)
