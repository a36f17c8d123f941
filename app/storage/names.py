"""Bucket and key name rules shared by every adapter and by the signed-URL routes.

The rules are S3's, tightened where a filesystem adapter needs it: a key that passes
`validate_key` can be joined under a bucket directory without ever leaving it.
"""

from __future__ import annotations

import re

from app.storage.base import InvalidNameError

__all__ = ["MAX_KEY_BYTES", "MAX_KEY_SEGMENT_BYTES", "key_head", "service_bucket", "validate_bucket_name",
           "validate_key", "validate_new_bucket_name", "validate_new_key", "validate_sha256"]

MAX_KEY_BYTES = 1024
#: A filesystem adapter stores each segment as a file or directory name, and most filesystems
#: refuse names over 255 bytes (NAME_MAX). Keys the service makes or hands out URLs for keep to
#: it (`validate_new_key`), so that a key good on one store is good on all; an object already in
#: an S3 bucket under a longer segment stays readable, listable and deletable there.
MAX_KEY_SEGMENT_BYTES = 255

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_LIKE_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Unicode's control characters (category Cc): exactly C0, DEL and C1 (a test checks).
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Sequences S3 (and the minio client) refuse: they break virtual-host addressing.
_BAD_BUCKET_PARTS = ("..", ".-", "-.")
#: What S3 reserves for itself (its general purpose bucket naming rules): punycode, its
#: configurator, documentation examples; access point, Object Lambda, Multi-Region Access
#: Point, directory and table bucket aliases. A name with one would be refused by S3 itself,
#: or worse, taken by a store that does not know the rule and unusable when moved to S3.
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
#: Those refused from the start, for every bucket a store is asked about. The others were
#: reserved later and are refused for new buckets only (`validate_new_bucket_name`): a bucket
#: made before with such a name (`logs.mrap`, on the filesystem store or MinIO) stays usable,
#: through the stores and the signed-URL routes.
_FIRST_RESERVED_PREFIXES = ("xn--", "sthree-")
_FIRST_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3")


def service_bucket(region: str) -> str:
    """The service's own bucket in a region (chunks, image-list CSVs)."""
    return f"ims-svc-{region}"[:63]


def _shown(name: object) -> str:
    """A refused name as an error message shows it: its repr, cut after 64 characters."""
    text = repr(name)
    return text if len(text) <= 64 else f"{text[:63]}…"


def validate_bucket_name(name: str) -> str:
    """Return `name` unchanged when it is a valid S3 bucket name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _BUCKET_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid bucket name {_shown(name)}: 3-63 lowercase letters, digits, '-' or '.', "
            "starting and ending with a letter or digit"
        )
    if any(part in name for part in _BAD_BUCKET_PARTS):
        raise InvalidNameError(f"invalid bucket name {_shown(name)}: contains '..', '.-' or '-.'")
    if _IPV4_LIKE_RE.fullmatch(name):
        raise InvalidNameError(f"invalid bucket name {_shown(name)}: formatted like an IP address")
    if name.startswith(_FIRST_RESERVED_PREFIXES) or name.endswith(_FIRST_RESERVED_SUFFIXES):
        raise _reserved(name)
    return name


def validate_new_bucket_name(name: str) -> str:
    """`validate_bucket_name`, and none of the prefixes and suffixes S3 reserves: the name of
    a bucket to make (an existing one may have a form reserved since it was made)."""
    validate_bucket_name(name)
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        raise _reserved(name)
    return name


def _reserved(name: str) -> InvalidNameError:
    return InvalidNameError(f"invalid bucket name {_shown(name)}: S3 reserves the prefixes "
                            f"{', '.join(_RESERVED_PREFIXES)} and the suffixes {', '.join(_RESERVED_SUFFIXES)}")


def validate_key(key: str) -> str:
    """Return `key` unchanged when it is a safe object key, else raise InvalidNameError.

    A key is 1-1024 bytes of UTF-8, `/`-separated segments, none empty, `.` or `..`; no
    leading `/`, no backslash, no control character. (A key the service makes an object
    under also keeps every segment within 255 bytes: `validate_new_key`.)
    """
    if not isinstance(key, str) or not key:
        raise InvalidNameError("object key must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InvalidNameError(f"object key {key!r} is not valid UTF-8") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidNameError(f"object key is {size} bytes long, over {MAX_KEY_BYTES}")
    if key.startswith("/"):
        raise InvalidNameError(f"object key {key!r} must not start with '/'")
    if "\\" in key:
        # Refused so that no platform or proxy can read it as a path separator.
        raise InvalidNameError(f"object key {key!r} must not contain a backslash")
    if _CONTROL_RE.search(key):
        raise InvalidNameError(f"object key {key!r} must not contain control characters")
    if not key.strip():
        # The minio client refuses blank names; refuse them everywhere for one contract.
        raise InvalidNameError("object key must not be blank")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidNameError(f"object key {key!r} has an empty, '.' or '..' path segment")
    return key


def key_head(text: str) -> str:
    """The longest prefix of `text` that a key can start with: up to its first lone surrogate
    (no key is one, nor holds one) and within MAX_KEY_BYTES of UTF-8 (whole characters).
    A listing's `prefix` that is not its own head matches no key; every key after a
    `start_after` is after its head too (a prefix sorts first), which an S3 server can be
    sent where the whole could not (a query string of any length, a surrogate)."""
    if (surrogate := _SURROGATE_RE.search(text)) is not None:
        text = text[: surrogate.start()]
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_KEY_BYTES:
        return text
    return encoded[:MAX_KEY_BYTES].decode("utf-8", "ignore")


def validate_new_key(key: str) -> str:
    """`validate_key`, and every segment at most MAX_KEY_SEGMENT_BYTES of UTF-8: the key of an
    object the service is about to make (an upload URL, an export) or one the filesystem store
    holds."""
    validate_key(key)
    for segment in key.split("/"):
        if len(segment.encode("utf-8")) > MAX_KEY_SEGMENT_BYTES:
            raise InvalidNameError(f"object key {key!r} has a segment over {MAX_KEY_SEGMENT_BYTES} bytes")
    return key


def validate_sha256(digest: str | None) -> str | None:
    """Return a caller's hex SHA-256 (or None) unchanged, else raise ValueError."""
    if digest is not None and not (isinstance(digest, str) and _SHA256_RE.fullmatch(digest)):
        raise ValueError(f"not a lowercase hex SHA-256: {digest!r}")
    return digest
