"""The error tree of expected failures, and every stable error code.

    ImsError                  an expected failure; becomes a payload union member
    ├── NotFound              NotFoundError: missing, or not visible to the caller
    ├── Invalid               ValidationError: malformed or out-of-range input (`field`)
    ├── Forbidden             ForbiddenError: visible, but the caller may not do this
    ├── Conflict              ConflictError: the resource's state does not allow it now
    ├── NotSupported          NotSupportedError: this kind of resource cannot do it
    ├── LimitExceeded         LimitExceededError: a quota or hard limit (`limit`)
    └── KmsKeyProblem         KmsKeyError: key missing, disabled, pending deletion, not granted

Anything else raised while serving a request is unexpected: it is masked in the response
and logged with the request id.
"""

from __future__ import annotations

from typing import ClassVar

#: Every stable code, with what it means. The README's error table is generated from this.
CODES: dict[str, str] = {
    # NotFoundError
    "IMAGE_NOT_FOUND": "No image with this id is visible to the caller.",
    "ACCOUNT_NOT_FOUND": "No such account.",
    "TOKEN_NOT_FOUND": "No such API token of the caller.",
    "TAG_NOT_FOUND": "The image has no tag with this key.",
    "JOB_NOT_FOUND": "No job with this id is visible to the caller.",
    "BUCKET_NOT_FOUND": "No bucket with this name belongs to the caller.",
    "OBJECT_NOT_FOUND": "No such object in the bucket.",
    "KMS_KEY_NOT_FOUND": "No KMS key with this id is visible to the caller.",
    "GRANT_NOT_FOUND": "No such grant on the key.",
    "SERVER_NOT_FOUND": "No server with this id belongs to the caller.",
    "VOLUME_NOT_FOUND": "No volume with this id belongs to the caller.",
    "MEMBER_NOT_FOUND": "The account is not a member of the image.",
    # ValidationError
    "INVALID_NAME": "Name: 1-128 letters (of any script, with their combining marks), digits, '-', '.', '_' or spaces, no leading/trailing space; stored in Unicode's composed form (NFC). An API token's name: 1-64 printable characters (no control or format character), no outer whitespace, not IMS_ADMIN_TOKEN.",
    "INVALID_DESCRIPTION": "Description: at most 1024 characters, no '<', '>', CR or LF.",
    "INVALID_RAM_RANGE": "0 <= minRamMb <= maxRamMb <= 1048576.",
    "INVALID_TAG_KEY": "Tag key: 1-36 characters of letters (of any script, with their combining marks), digits, '_' or '-'; stored in Unicode's composed form (NFC).",
    "INVALID_TAG_VALUE": "Tag value: 0-43 characters of letters (of any script, with their combining marks), digits, '_', '.' or '-'; stored composed (NFC).",
    "DUPLICATE_TAG_KEY": "The same tag key appears twice in one request.",
    "INVALID_CURSOR": "The pagination cursor is malformed or belongs to another ordering.",
    "INVALID_DATETIME": "A date-time must carry its UTC offset (`2026-01-31T12:00:00Z`).",
    "INVALID_PAGE_SIZE": "`first` must be between 0 and 1000.",
    "INVALID_REGION": "No such region.",
    "INVALID_ACCOUNT_NAME": "Account name: 3-64 characters of lowercase letters, digits, '-' or '_'.",
    "INVALID_QUOTA": "A quota limit is between 0 and 100000.",
    "INVALID_EXPIRY": "Token lifetime: 1 to 3650 days (a token made with an expiring token expires with it at the latest).",
    "OS_REQUIRED": "System disk and ISO images need an operating system (`os`).",
    "INVALID_OS": "Operating system: a platform of 1-64 and a version of 1-128 characters, 32 or 64 bits.",
    "EMPTY_REQUEST": "The request names nothing to act on.",
    "TOO_MANY_ITEMS": "A batch names more items than allowed in one request.",
    # ForbiddenError
    "ADMIN_REQUIRED": "Only administrators may do this.",
    "NOT_OWNER": "Only the image's owner may do this.",
    "PUBLIC_IMAGE_READ_ONLY": "Public images are read-only to non-administrators.",
    "IMAGE_PROTECTED": "The image is protected against deletion.",
    # ConflictError
    "IMAGE_NOT_ACTIVE": "The image is not ACTIVE.",
    "VERSION_CONFLICT": "The image changed since the expected version.",
    "IMAGE_BUSY": "A job is writing the image.",
    "ACCOUNT_EXISTS": "An account with this name exists.",
    "ALREADY_PUBLIC": "The image is already public.",
    # NotSupportedError
    "DATA_DISK_FIELDS": "Data disk images only take a new name and description.",
    "PUBLISH_NOT_SUPPORTED": "Encrypted and full-ECS images cannot be published.",
    # LimitExceededError
    "TOO_MANY_TAGS": "An image has at most 10 tags.",
    "QUOTA_PRIVATE_IMAGES": "The account's private-image quota in this region is used up.",
    "QUOTA_CONCURRENT_REPLICATIONS": "The account runs as many replications as it may.",
    "QUOTA_CONCURRENT_CREATIONS": "The account runs as many image creations as it may.",
}


class ImsError(Exception):
    """An expected failure with a stable code."""

    kind: ClassVar[str] = "UserError"

    def __init__(self, code: str, message: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unregistered error code {code}")
        self.code = code
        self.message = message or CODES[code]
        super().__init__(f"{code}: {self.message}")


class NotFound(ImsError):
    kind = "NotFoundError"

    def __init__(self, code: str, message: str | None = None, *, resource_id: str | None = None) -> None:
        super().__init__(code, message)
        self.resource_id = resource_id


class Invalid(ImsError):
    kind = "ValidationError"

    def __init__(self, code: str, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(code, message)
        self.field = field


class Forbidden(ImsError):
    kind = "ForbiddenError"


class Conflict(ImsError):
    kind = "ConflictError"


class NotSupported(ImsError):
    kind = "NotSupportedError"


class LimitExceeded(ImsError):
    kind = "LimitExceededError"

    def __init__(self, code: str, message: str | None = None, *, limit: int) -> None:
        super().__init__(code, message)
        self.limit = limit


class KmsKeyProblem(ImsError):
    kind = "KmsKeyError"

    def __init__(self, code: str, message: str | None = None, *, key_id: str | None = None) -> None:
        super().__init__(code, message)
        self.key_id = key_id


def register_codes(codes: dict[str, str]) -> None:
    """Feature modules add their codes here at import (pure data, no side effect elsewhere)."""
    for code, text in codes.items():
        if code in CODES and CODES[code] != text:
            raise ValueError(f"error code {code} registered twice with different meanings")
        CODES[code] = text


__all__ = [
    "CODES",
    "Conflict",
    "Forbidden",
    "ImsError",
    "Invalid",
    "KmsKeyProblem",
    "LimitExceeded",
    "NotFound",
    "NotSupported",
    "register_codes",
]
