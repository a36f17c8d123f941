"""`UrlSigner`: what a signature covers and how verification fails."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from app.storage.base import HttpMethod
from app.storage.signing import SignatureError, UrlSigner


def sig_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


def test_sign_then_verify() -> None:
    signer = UrlSigner(b"k" * 32, "https://ims.example/")
    url = signer.sign("PUT", "bucket-a", "dir/a b%.raw", 60, now=1_000_000)

    assert url.startswith(
        "https://ims.example/objects/bucket-a/dir/a%20b%25.raw?expires=1000060&sig="
    )
    sig = sig_of(url)
    signer.verify("PUT", "bucket-a", "dir/a b%.raw", "1000060", sig, now=1_000_059)
    with pytest.raises(SignatureError) as expired:
        signer.verify("PUT", "bucket-a", "dir/a b%.raw", "1000060", sig, now=1_000_060)
    assert expired.value.reason == "expired"


@pytest.mark.parametrize(
    ("method", "bucket", "key", "expires", "reason"),
    [
        ("GET", "bucket-a", "k", "1000060", "invalid"),  # other method
        ("PUT", "bucket-b", "k", "1000060", "invalid"),  # other bucket
        ("PUT", "bucket-a", "k2", "1000060", "invalid"),  # other key
        ("PUT", "bucket-a", "k", "1000061", "invalid"),  # other expiry
        ("PUT", "bucket-a", "k", "10e5", "malformed"),
        ("PUT", "bucket-a", "k", "-1", "malformed"),
        ("DELETE", "bucket-a", "k", "1000060", "malformed"),
        ("PUT", "bucket-a", "../k", "1000060", "malformed"),
    ],
)
def test_verify_refuses_changed_fields(
    method: str, bucket: str, key: str, expires: str, reason: str
) -> None:
    signer = UrlSigner(b"k" * 32, "https://ims.example")
    sig = sig_of(signer.sign("PUT", "bucket-a", "k", 60, now=1_000_000))

    with pytest.raises(SignatureError) as refused:
        signer.verify(method, bucket, key, expires, sig, now=1_000_000)
    assert refused.value.reason == reason


def test_verify_refuses_other_secret_and_malformed_sig() -> None:
    signer = UrlSigner(b"k" * 32, "https://ims.example")
    other = UrlSigner(b"j" * 32, "https://ims.example")
    sig = sig_of(other.sign("GET", "bucket-a", "k", 60, now=0))

    with pytest.raises(SignatureError, match="invalid"):
        signer.verify("GET", "bucket-a", "k", 60, sig, now=0)
    for bad in ("", "zz", sig.upper(), sig[:-1], sig + "0"):
        with pytest.raises(SignatureError, match="malformed"):
            signer.verify("GET", "bucket-a", "k", 60, bad, now=0)


def test_signature_depends_on_every_field() -> None:
    signer = UrlSigner(b"k" * 32, "https://ims.example")
    variants: list[tuple[HttpMethod, str, str, int]] = [
        ("GET", "bucket-a", "k", 60),
        ("PUT", "bucket-a", "k", 60),
        ("GET", "bucket-b", "k", 60),
        ("GET", "bucket-a", "k2", 60),
        ("GET", "bucket-a", "k", 61),
    ]
    sigs = {sig_of(signer.sign(m, b, k, e, now=0)) for m, b, k, e in variants}
    assert len(sigs) == len(variants)


def test_signer_refuses_short_secret_and_bad_input() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short", "http://testserver")
    signer = UrlSigner(b"k" * 32, "http://testserver")
    with pytest.raises(ValueError):
        signer.sign("DELETE", "bucket-a", "k", 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        signer.sign("GET", "bucket-a", "k", 0)
