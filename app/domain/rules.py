"""The numbers of DESIGN §1 as named constants, and the pure validators that use them.

Validators raise `Invalid` with the input path as `field`; they never touch storage.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from app.domain.enums import QuotaResource
from app.errors import Invalid

NAME_MAX = 128
DESCRIPTION_MAX = 1024
RAM_MAX_MB = 1_048_576
TAGS_PER_IMAGE = 10
TAG_KEY_MAX = 36
TAG_VALUE_MAX = 43
MEMBERS_PER_IMAGE = 256
MEMBERS_PER_FULL_ECS_IMAGE = 10
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1000
BATCH_MAX = 100
#: Distinct values a list filter of the catalog names (`ids`, `platform`): each is a bound
#: parameter in every arm of the page statement and of its count, and past what SQLite or
#: asyncpg bind in one statement the page failed as an internal error.
FILTER_VALUES_MAX = 1000
ACCOUNT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{2,63}")
TOKEN_NAME_MAX = 64
#: The name of the admin token that IMS_ADMIN_TOKEN put there, which marks it for revocation
#: when the environment's token changes; reserved: no token is created under it through the API.
ENV_ADMIN_TOKEN_NAME = "IMS_ADMIN_TOKEN"
TOKEN_DAYS_MAX = 3650
QUOTA_MAX = 100_000

DEFAULT_QUOTAS: dict[QuotaResource, int] = {
    QuotaResource.PRIVATE_IMAGES: 50,
    QuotaResource.CONCURRENT_REPLICATIONS: 5,
    QuotaResource.CONCURRENT_CREATIONS: 40,
}

# \w in Python's re is Unicode-aware: letters of every script, digits and '_'. Every pattern
# here is applied with `fullmatch`: `$` with `match` would also accept a trailing newline.
_TAG_CHAR_RE = re.compile(r"\w")
_FORBIDDEN_DESCRIPTION = frozenset("<>\r\n")


def _is_name_char(ch: str) -> bool:
    if ch in "-._ ":
        return True
    category = unicodedata.category(ch)
    return category.startswith("L") or category == "Nd"


def validate_name(name: str, field: str = "input.name") -> str:
    """1-128 chars of letters (any script), digits, `-` `.` `_` and space; no outer space.
    Returns the name as stored: in Unicode's composed form (NFC), so that "Café" typed with a
    combining accent (as some keyboards send it) is the same name as with "é". A combining
    mark belongs to the letter before it (Devanagari's vowel signs, say): it may follow a
    letter or another mark, nothing else."""
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= NAME_MAX or name != name.strip(" "):
        raise Invalid("INVALID_NAME", field=field)
    in_letter = False
    for ch in name:
        if unicodedata.category(ch).startswith("M"):
            if not in_letter:
                raise Invalid("INVALID_NAME", field=field)
            continue
        if not _is_name_char(ch):
            raise Invalid("INVALID_NAME", field=field)
        in_letter = unicodedata.category(ch).startswith("L")
    return name


def validate_token_name(name: str) -> str:
    """1-64 characters as shown (composed, NFC, as stored), no outer whitespace, none of them
    a control or format character (C*: a newline, an escape, a right-to-left override that
    would show the name reversed in a list) nor a line or paragraph separator; any other
    letter, digit, symbol or punctuation (`ci/deploy`, `laptop: alice`). The name
    IMS_ADMIN_TOKEN is reserved."""
    name = unicodedata.normalize("NFC", name)
    if (not 1 <= len(name) <= TOKEN_NAME_MAX or name != name.strip() or name == ENV_ADMIN_TOKEN_NAME
            or any(unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp") for ch in name)):
        raise Invalid("INVALID_NAME", f"Token name: 1-64 printable characters, not {ENV_ADMIN_TOKEN_NAME}.",
                      field="input.name")
    return name


def validate_description(text: str, field: str = "input.description") -> str:
    """At most 1024 characters, none of `<`, `>`, CR, LF. Returns the text as stored: composed
    (NFC), as names are, so a description typed with combining accents counts its characters
    as it shows them ("é" is one, whichever form the keyboard sent)."""
    text = unicodedata.normalize("NFC", text)
    if len(text) > DESCRIPTION_MAX or any(ch in _FORBIDDEN_DESCRIPTION for ch in text):
        raise Invalid("INVALID_DESCRIPTION", field=field)
    return text


def validate_ram(min_ram_mb: int, max_ram_mb: int | None, *, min_given: bool = True) -> None:
    """`0 <= min <= max <= RAM_MAX_MB` (no max: unrestricted). The error's `field` is the value
    at fault: a bound out of range itself, else (min above max) the minimum, unless the request
    gave only the maximum (`min_given=False`: an update that keeps the stored minimum)."""
    if not 0 <= min_ram_mb <= RAM_MAX_MB:
        raise Invalid("INVALID_RAM_RANGE", field="input.minRamMb")
    if max_ram_mb is None:
        return
    if not 0 <= max_ram_mb <= RAM_MAX_MB:
        raise Invalid("INVALID_RAM_RANGE", field="input.maxRamMb")
    if min_ram_mb > max_ram_mb:
        raise Invalid("INVALID_RAM_RANGE", field="input.minRamMb" if min_given else "input.maxRamMb")


def _tag_text_ok(text: str, punctuation: str) -> bool:
    """Letters and digits of any script, '_' and `punctuation`; a combining mark may follow a
    letter or another mark (as in names)."""
    in_letter = False
    for ch in text:
        category = unicodedata.category(ch)
        if category.startswith("M"):
            if not in_letter:
                return False
            continue
        if not (ch in punctuation or _TAG_CHAR_RE.fullmatch(ch)):
            return False
        in_letter = category.startswith("L")
    return True


def tag_text(text: str) -> str:
    """A tag key or value as stored and compared: in Unicode's composed form (NFC)."""
    return unicodedata.normalize("NFC", text)


def validate_tag(key: str, value: str, index: int) -> tuple[str, str]:
    """The tag as stored (`tag_text`), or INVALID_TAG_KEY / INVALID_TAG_VALUE naming the item."""
    key, value = tag_text(key), tag_text(value)
    if not 1 <= len(key) <= TAG_KEY_MAX or not _tag_text_ok(key, "-"):
        raise Invalid("INVALID_TAG_KEY", f"Tag key {key!r} is not 1-36 of letters, digits, '_', '-'.",
                      field=f"input.tags[{index}].key")
    if len(value) > TAG_VALUE_MAX or not _tag_text_ok(value, ".-"):
        raise Invalid("INVALID_TAG_VALUE", f"Tag value {value!r} is not 0-43 of letters, digits, '_', '.', '-'.",
                      field=f"input.tags[{index}].value")
    return key, value


def validate_tags(tags: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Tags given in one request, as stored, by key; a key given twice (also once composed and
    once with a combining mark) is DUPLICATE_TAG_KEY naming its second place."""
    seen: dict[str, str] = {}
    for index, (given_key, given_value) in enumerate(tags):
        key, value = validate_tag(given_key, given_value, index)
        if key in seen:
            raise Invalid("DUPLICATE_TAG_KEY", f"Tag key {key!r} appears twice.", field=f"input.tags[{index}].key")
        seen[key] = value
    return seen


def validate_page_size(first: int | None) -> int:
    if first is None:
        return PAGE_SIZE_DEFAULT
    if not 0 <= first <= PAGE_SIZE_MAX:
        raise Invalid("INVALID_PAGE_SIZE", field="first")
    return first


def validate_batch(ids: list[str], field: str) -> list[str]:
    """De-duplicated ids in request order; empty or oversized batches are refused."""
    if not ids:
        raise Invalid("EMPTY_REQUEST", field=field)
    if len(ids) > BATCH_MAX:
        raise Invalid("TOO_MANY_ITEMS", f"At most {BATCH_MAX} items per request.", field=field)
    return list(dict.fromkeys(ids))
