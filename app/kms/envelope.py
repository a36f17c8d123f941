"""The local KMS's cryptography: the root key file, sealing key material, wrapping data keys.

    root key (file, 0600) ──seals──▶ key material (per key, in kms_keys) ──wraps──▶ data keys

Both layers are AES-256-GCM with a fresh 96-bit nonce and associated data naming the key
id, so a sealed material or a wrapped data key moved to another key fails to open. The
stored form is `version ‖ nonce ‖ ciphertext ‖ tag`. Plain keys are 32 bytes: sealing and
unwrapping them is microseconds of CPU, cheap enough to run on the event loop.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import KmsKeyProblem
from app.kms.port import DATA_KEY_BYTES, KmsSealError

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = b"\x01"
_MATERIAL_AAD = b"ims-kms:material:v1:"
_DATA_KEY_AAD = b"ims-kms:data-key:v1:"


def load_root_key(path: Path, *, create: bool = True) -> bytes:
    """The root key in `path`; created with 32 random bytes, mode 0600, if missing and `create`
    (KmsSealError if missing otherwise: keys are sealed under the lost one).

    The file appears atomically (written beside it, then hard-linked into place), so
    processes starting together agree on one key and none reads a half-written file."""
    try:
        return _load_root_key(path, create=create)
    except OSError as exc:
        # A directory, a file without read permission, a parent that cannot be made: one
        # line at start naming the file (app.cli.main), not the OSError's traceback.
        raise KmsSealError(f"the KMS root key file {path} cannot be read ({exc.strerror or exc}): "
                           "point IMS_KMS_ROOT_KEY_FILE at the file") from None


def _load_root_key(path: Path, *, create: bool) -> bytes:
    if path.exists():
        return _read_root_key(path)
    if not create:
        # A new root key would not open the stored keys: all data encrypted with them would
        # become unreadable, and only each key's first use would tell.
        raise KmsSealError(f"the KMS root key file {path} is missing but keys are sealed under a root key: "
                           "restore it (or point IMS_KMS_ROOT_KEY_FILE at it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            log.info("KMS root key created at %s (mode 0600)", path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return _read_root_key(path)


def _read_root_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("KMS root key file %s is accessible to other users (mode %o); use 0600", path, mode)
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise KmsSealError(f"the KMS root key file {path} must hold exactly {KEY_BYTES} bytes, not {len(data)}: "
                           "point IMS_KMS_ROOT_KEY_FILE at the file the keys were sealed with")
    return data


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return _VERSION + nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    """Raises InvalidTag when `sealed` was tampered with, or sealed under other keys or AAD."""
    if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != _VERSION:
        raise InvalidTag()
    return aead.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)


class RootSealer:
    """Seals key material under the root key. Keeps only the cipher object, never the key
    bytes, and shows nothing of it in its repr."""

    def __init__(self, root_key: bytes) -> None:
        if len(root_key) != KEY_BYTES:
            raise ValueError(f"the KMS root key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(root_key)

    def __repr__(self) -> str:
        return "RootSealer(<secret>)"

    def seal(self, key_id: str, material: bytes) -> bytes:
        return _seal(self._aead, material, _MATERIAL_AAD + key_id.encode())

    def unseal(self, key_id: str, sealed: bytes) -> bytes:
        try:
            return _open(self._aead, sealed, _MATERIAL_AAD + key_id.encode())
        except InvalidTag:
            raise KmsSealError(f"the material of KMS key {key_id} does not open with this root key") from None


def new_material() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def new_data_key() -> bytes:
    return secrets.token_bytes(DATA_KEY_BYTES)


def wrap_data_key(material: bytes, key_id: str, data_key: bytes) -> bytes:
    return _seal(AESGCM(material), data_key, _DATA_KEY_AAD + key_id.encode())


def unwrap_data_key(material: bytes, key_id: str, wrapped: bytes) -> bytes:
    """KmsKeyProblem KMS_INVALID_CIPHERTEXT when `wrapped` is corrupt or not this key's."""
    try:
        return _open(AESGCM(material), wrapped, _DATA_KEY_AAD + key_id.encode())
    except InvalidTag:
        raise KmsKeyProblem("KMS_INVALID_CIPHERTEXT", key_id=key_id) from None
