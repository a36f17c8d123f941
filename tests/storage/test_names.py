"""Bucket and key name rules."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from app.storage.base import InvalidNameError
from app.storage.names import (
    MAX_KEY_BYTES,
    validate_bucket_name,
    validate_key,
    validate_new_bucket_name,
    validate_new_key,
)


@pytest.mark.parametrize("name", ["abc", "a-b.c", "0day", "x" * 63, "my.bucket-1",
                                  # near the reserved forms
                                  "amzn-s3-demo", "s3alias-name", "name-x-s3", "name-mrap", "xn-a", "name-ol-s3"])
def test_valid_bucket_names(name: str) -> None:
    assert validate_bucket_name(name) == name
    assert validate_new_bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "x" * 64,
        "Upper",
        "under_score",
        "-lead",
        "trail-",
        ".lead",
        "trail.",
        "a..b",
        "a.-b",
        "a-.b",
        "192.168.1.1",
        "10.0.0.255",
        "xn--punycode",
        "sthree-configurator",
        "name-s3alias",
        "name--ol-s3",
        "with space",
        "sl/ash",
        "",
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_bucket_name(name)
    with pytest.raises(InvalidNameError):
        validate_new_bucket_name(name)


@pytest.mark.parametrize("name", ["amzn-s3-demo-bucket", "name.mrap", "name--x-s3", "name--table-s3"])
def test_forms_reserved_since_buckets_were_first_made_are_refused_to_new_buckets_only(name: str) -> None:
    """A bucket made before S3's later reserved forms were refused stays usable: the stores
    check every bucket they are asked about with `validate_bucket_name`."""
    assert validate_bucket_name(name) == name
    with pytest.raises(InvalidNameError, match="S3 reserves the prefixes"):
        validate_new_bucket_name(name)


@pytest.mark.parametrize(
    "key",
    [
        "a", "a/b/c.raw", ".hidden", "a/..b", "a/b..", "...", "é", "a b",
        "x" * 255, "é" * 127 + "x",  # segments of 255 bytes
        "/".join(["x" * 255] * 3 + ["x" * 254, "x"]),  # 1024 bytes
        "/".join(["é" * 127] * 4 + ["é" * 2]),  # 1024 bytes of UTF-8
    ],
)
def test_valid_keys(key: str) -> None:
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        " ",
        "/".join(["x" * 255] * 4) + "/x",  # 1025 bytes
        "/".join(["é" * 127] * 4) + "/ééx",  # 1025 bytes of UTF-8
        "/abs",
        "a/",
        "a//b",
        ".",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        "a/..",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a\x85b",  # C1 control
        "\ud800",  # lone surrogate: not encodable as UTF-8
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_key(key)


@pytest.mark.parametrize("key", ["x" * 256, "a/" + "x" * 256 + "/b", "é" * 128])  # é: 2 bytes
def test_a_new_key_keeps_every_segment_within_255_bytes(key: str) -> None:
    """An existing object may have such a key (put in an S3 bucket from outside): it stays a
    key. The service makes no object under one (no file can have such a name)."""
    assert validate_key(key) == key
    with pytest.raises(InvalidNameError, match="has a segment over 255 bytes"):
        validate_new_key(key)
    assert validate_new_key(key.replace("x" * 256, "x" * 255).replace("é" * 128, "é" * 127 + "x")) is not None


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidNameError):
        validate_bucket_name(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        validate_key(None)  # type: ignore[arg-type]


def test_every_control_character_and_only_those_is_refused() -> None:
    """The key check's character class is Unicode's category Cc, exactly."""
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) == "Cs":
            continue  # lone surrogates: refused as not UTF-8, tested above
        key = f"a{char}b"
        if unicodedata.category(char) == "Cc":
            with pytest.raises(InvalidNameError):
                validate_key(key)
        elif char not in "/\\":
            assert validate_key(key) == key
