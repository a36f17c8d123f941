"""HMAC-signed, time-limited `/objects/…` URLs for the filesystem store.

The signature covers the method, bucket, key and expiry, so a URL grants exactly one
operation on exactly one object until it expires: a GET URL cannot PUT, and changing any
part of the URL (including `expires`) invalidates it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Literal
from urllib.parse import quote, urlencode

from app.storage.base import HttpMethod, InvalidNameError, StorageError
from app.storage.names import validate_bucket_name, validate_key

__all__ = ["MAX_EXPIRES_IN", "SignatureError", "UrlSigner"]

#: Same ceiling as S3 presigned URLs, so both stores accept the same lifetimes.
MAX_EXPIRES_IN = 7 * 24 * 3600

_SCHEME = b"ims-object-url-v1"
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")

SignatureFailure = Literal["expired", "invalid", "malformed"]


class SignatureError(StorageError):
    """A signed URL was refused; `reason` says why (never which part was wrong)."""

    def __init__(self, reason: SignatureFailure) -> None:
        super().__init__(f"signed URL refused: {reason}")
        self.reason: SignatureFailure = reason


class UrlSigner:
    """Signs and verifies object URLs under `{base_url}/objects/{bucket}/{key}`."""

    def __init__(self, secret: bytes, base_url: str) -> None:
        if len(secret) < 16:
            raise ValueError("the URL signing secret must be at least 16 bytes")
        self._secret = secret
        self._base_url = base_url.rstrip("/")

    @property
    def base_url(self) -> str:
        return self._base_url

    def sign(
        self,
        method: HttpMethod,
        bucket: str,
        key: str,
        expires_in: int,
        now: float | None = None,
    ) -> str:
        """A URL allowing `method` on the object for `expires_in` seconds from `now`."""
        _check_method(method)
        validate_bucket_name(bucket)
        validate_key(key)
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise ValueError(f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds")
        expires = int(time.time() if now is None else now) + expires_in
        query = urlencode({"expires": expires, "sig": self._digest(method, bucket, key, expires)})
        return f"{self._base_url}/objects/{bucket}/{quote(key, safe='/')}?{query}"

    def verify(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: str | int,
        sig: str,
        now: float | None = None,
    ) -> None:
        """Return when the signature is valid and unexpired, else raise SignatureError."""
        if isinstance(expires, int):
            expires_at = expires
        elif isinstance(expires, str) and _EXPIRES_RE.fullmatch(expires):
            expires_at = int(expires)
        else:
            raise SignatureError("malformed")
        if not isinstance(sig, str) or not _SIG_RE.fullmatch(sig) or method not in ("GET", "PUT"):
            raise SignatureError("malformed")
        try:
            validate_bucket_name(bucket)
            validate_key(key)
        except InvalidNameError as exc:
            raise SignatureError("malformed") from exc
        expected = self._digest(method, bucket, key, expires_at)
        # Compare before looking at the expiry so timing says nothing about the signature.
        valid = hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii"))
        if not valid:
            raise SignatureError("invalid")
        if (time.time() if now is None else now) >= expires_at:
            raise SignatureError("expired")

    def _digest(self, method: str, bucket: str, key: str, expires: int) -> str:
        # Newlines cannot occur in a valid bucket or key, so the fields cannot run together.
        message = b"\n".join(
            (_SCHEME, method.encode(), bucket.encode(), key.encode("utf-8"), str(expires).encode())
        )
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def _check_method(method: str) -> None:
    if method not in ("GET", "PUT"):
        raise ValueError(f"unsupported method {method!r}; expected 'GET' or 'PUT'")
