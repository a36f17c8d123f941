"""The pure rules of DESIGN §1: names, descriptions, RAM, tags, page sizes, cursors and
licensed platforms."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from app.domain.images import is_licensed_platform
from app.domain.pagination import decode_cursor, decode_datetime, encode_cursor
from app.domain.rules import (
    DESCRIPTION_MAX,
    NAME_MAX,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    RAM_MAX_MB,
    TAG_KEY_MAX,
    TAG_VALUE_MAX,
    validate_description,
    validate_name,
    validate_page_size,
    validate_ram,
    validate_tag,
    validate_tags,
)
from app.errors import Invalid


def test_limits_are_the_documented_numbers() -> None:
    assert (NAME_MAX, DESCRIPTION_MAX, RAM_MAX_MB) == (128, 1024, 1_048_576)
    assert (TAG_KEY_MAX, TAG_VALUE_MAX) == (36, 43)
    assert (PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX) == (50, 1000)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", [
    "a",
    "镜像-1.0_a b",
    "Ubuntu 22.04 server",
    "Ñandú-ÉTÉ",
    "x" * 128,
    "é" * 128,
    "0",
])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(("typed", "stored"), [
    ("Cafe\u0301", "Café"),  # a combining accent, as some keyboards send it: stored composed
    ("\u0939\u093f\u0928\u094d\u0926\u0940", "\u0939\u093f\u0928\u094d\u0926\u0940"),  # हिन्दी: vowel signs, virama
    ("x" * 127 + "e\u0301", "x" * 127 + "é"),  # 129 characters typed, 128 once composed
])
def test_names_are_stored_composed_with_their_marks(typed: str, stored: str) -> None:
    assert validate_name(typed) == stored


@pytest.mark.parametrize("name", [
    "\u0301abc",  # a mark with no letter before it
    "a \u0301b",  # after a space
    "v1.\u0301",  # after punctuation
    "1\u0301",  # after a digit
])
def test_a_combining_mark_must_follow_a_letter(name: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_name(name, field="input.name")
    assert info.value.code == "INVALID_NAME"


@pytest.mark.parametrize("name", [
    "",
    "x" * 129,
    " leading",
    "trailing ",
    " ",
    "a<b",
    "a>b",
    "rocket🚀",
    "tab\there",
    "new\nline",
    "slash/x",
    "semi;colon",
    "quote'x",
])
def test_invalid_names(name: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_name(name, field="input.name")
    assert (info.value.code, info.value.field) == ("INVALID_NAME", "input.name")


# ---------------------------------------------------------------- descriptions


@pytest.mark.parametrize("text", ["", "x" * 1024, "plain text, with punctuation: (ok) & 'quotes' 镜像 🚀"])
def test_valid_descriptions(text: str) -> None:
    assert validate_description(text) == text


@pytest.mark.parametrize("text", ["x" * 1025, "a<b", "a>b", "a\rb", "a\nb", "<script>"])
def test_invalid_descriptions(text: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_description(text)
    assert (info.value.code, info.value.field) == ("INVALID_DESCRIPTION", "input.description")


# ---------------------------------------------------------------- RAM


@pytest.mark.parametrize(("min_ram", "max_ram"), [
    (0, None),
    (0, 0),
    (1024, 1024),
    (1024, 2048),
    (0, 1_048_576),
    (1_048_576, None),
    (1_048_576, 1_048_576),
])
def test_valid_ram_ranges(min_ram: int, max_ram: int | None) -> None:
    validate_ram(min_ram, max_ram)


@pytest.mark.parametrize(("min_ram", "max_ram", "min_given", "field"), [
    (-1, None, True, "input.minRamMb"),
    (-1, 1024, True, "input.minRamMb"),
    (2048, 1024, True, "input.minRamMb"),
    (1_048_577, None, True, "input.minRamMb"),
    # The field is the value at fault, not always the minimum.
    (0, 1_048_577, True, "input.maxRamMb"),
    (0, -1, True, "input.maxRamMb"),
    (-1, -1, True, "input.minRamMb"),
    # A maximum below the stored minimum, when the request changed the maximum alone.
    (2048, 1024, False, "input.maxRamMb"),
])
def test_invalid_ram_ranges(min_ram: int, max_ram: int | None, min_given: bool, field: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_ram(min_ram, max_ram, min_given=min_given)
    assert (info.value.code, info.value.field) == ("INVALID_RAM_RANGE", field)


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(("key", "value"), [
    ("k" * 36, "v" * 43),
    ("env", ""),
    ("环境", "生产"),
    ("clé-é_1", "v1.2-rc_3"),
    ("a", "1.0.0"),
])
def test_valid_tags(key: str, value: str) -> None:
    assert validate_tag(key, value, 0) == (key, value)


@pytest.mark.parametrize(("key", "value", "stored"), [
    ("Cafe\u0301", "cre\u0300me", ("Café", "crème")),  # combining accents, as some keyboards send them
    ("हिंदी", "मान", ("हिंदी", "मान")),  # Devanagari: vowel signs are marks that never compose
    ("ไทย", "ค่า", ("ไทย", "ค่า")),  # Thai tone marks
])
def test_tags_with_combining_marks_are_stored_composed(key: str, value: str, stored: tuple[str, str]) -> None:
    assert validate_tag(key, value, 0) == stored


def test_a_key_given_composed_and_decomposed_is_a_duplicate() -> None:
    with pytest.raises(Invalid) as info:
        validate_tags([("Café", "1"), ("Cafe\u0301", "2")])
    assert (info.value.code, info.value.field) == ("DUPLICATE_TAG_KEY", "input.tags[1].key")


@pytest.mark.parametrize("key", ["", "k" * 37, "a.b", "a b", "a:b", "a/b", "rocket🚀", "env\n", "\n", "\u0301a", "-\u0301",
                                 "e" + "\u0301" * 37])
def test_invalid_tag_keys(key: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_tag(key, "v", 3)
    assert (info.value.code, info.value.field) == ("INVALID_TAG_KEY", "input.tags[3].key")


@pytest.mark.parametrize("value", ["v" * 44, "a b", "a:b", "a/b", "<x>", "rocket🚀", "v\n", "\n"])
def test_invalid_tag_values(value: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_tag("key", value, 2)
    assert (info.value.code, info.value.field) == ("INVALID_TAG_VALUE", "input.tags[2].value")


# ---------------------------------------------------------------- page size


@pytest.mark.parametrize(("first", "expected"), [(None, 50), (0, 0), (1, 1), (1000, 1000)])
def test_valid_page_sizes(first: int | None, expected: int) -> None:
    assert validate_page_size(first) == expected


@pytest.mark.parametrize("first", [-1, 1001, 10**9])
def test_invalid_page_sizes(first: int) -> None:
    with pytest.raises(Invalid) as info:
        validate_page_size(first)
    assert (info.value.code, info.value.field) == ("INVALID_PAGE_SIZE", "first")


# ---------------------------------------------------------------- cursors


def _b64(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_cursor_round_trip() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    cursor = encode_cursor("CREATED_AT:DESC", when, "img-abc")
    value, item_id = decode_cursor(cursor, "CREATED_AT:DESC")
    assert item_id == "img-abc"
    assert decode_datetime(value) == when
    assert decode_cursor(encode_cursor("SIZE:ASC", 42, "img-x"), "SIZE:ASC") == (42, "img-x")
    assert decode_cursor(encode_cursor("NAME:ASC", "镜像", "img-y"), "NAME:ASC") == ("镜像", "img-y")


def _tampered() -> str:
    cursor = encode_cursor("NAME:ASC", "abc", "img-1")
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[0] = ord("{")  # no longer a JSON list
    return base64.urlsafe_b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("cursor", [
    "garbage!!",
    "%%%",
    "",
    "bm90IGpzb24",  # base64 of "not json"
    _tampered(),
    _b64({"ordering": "NAME:ASC"}),
    _b64(["NAME:ASC", "abc"]),
    _b64(["NAME:ASC", "abc", 7]),
    _b64(["NAME:ASC", None, "img-1"]),
    _b64(["NAME:ASC", ["x"], "img-1"]),
    encode_cursor("NAME:DESC", "abc", "img-1"),  # another direction
    encode_cursor("SIZE:ASC", 1, "img-1"),  # another field
    encode_cursor("members", 0, "acc-1"),  # another list
])
def test_foreign_or_malformed_cursor_is_invalid_cursor(cursor: str) -> None:
    with pytest.raises(Invalid) as info:
        decode_cursor(cursor, "NAME:ASC")
    assert (info.value.code, info.value.field) == ("INVALID_CURSOR", "after")


@pytest.mark.parametrize("value", ["yesterday", "2024-05-06T07:08:09", 12])
def test_cursor_datetime_must_be_an_aware_iso_timestamp(value: object) -> None:
    with pytest.raises(Invalid) as info:
        decode_datetime(value)
    assert info.value.code == "INVALID_CURSOR"


# ---------------------------------------------------------------- licensed platforms


#: DESIGN §1 export: Windows, SUSE, Red Hat, Ubuntu and Oracle Linux public images carry a
#: license. A platform is matched whole, whatever its case and surrounding spaces, in the
#: spellings images use (Huawei's `__platform` writes "RedHat").
@pytest.mark.parametrize("platform", [
    "Windows", "WINDOWS", " windows ",
    "SUSE", "suse",
    "Red Hat", "RedHat", "red hat",
    "Ubuntu", "ubuntu ",
    "Oracle Linux", "OracleLinux", "oracle linux",
])
def test_licensed_platforms(platform: str) -> None:
    assert is_licensed_platform(platform) is True


@pytest.mark.parametrize("platform", [
    "Debian", "CentOS", "Fedora", "EulerOS",
    "openSUSE",  # the free distribution, not SUSE's licensed one
    "", " ", None,
])
def test_unlicensed_platforms(platform: str | None) -> None:
    assert is_licensed_platform(platform) is False
