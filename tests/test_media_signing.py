"""Signed media URLs: what makes a signature valid, and how the key is chosen."""

from __future__ import annotations

import logging

import pytest

from calliope_graph.errors import ConfigurationError
from calliope_graph.serve._signing import DEFAULT_TTL, MediaSigner

NOW = 1_900_000_000.0
KEY = b"k" * 32


def _parts(query: str) -> tuple[str, str]:
    fields = dict(item.split("=", 1) for item in query.split("&"))
    return fields["exp"], fields["sig"]


def test_a_signature_holds_for_its_path_until_it_expires() -> None:
    signer = MediaSigner(KEY, ttl=60)
    exp, sig = _parts(signer.query("t1/r1/a.png", now=NOW))
    assert int(exp) == NOW + 60
    assert len(sig) == 64 and sig == sig.lower() and int(sig, 16) >= 0  # hex HMAC-SHA256
    assert signer.verify("t1/r1/a.png", exp, sig, now=NOW)
    assert signer.verify("t1/r1/a.png", exp, sig, now=NOW + 60)  # up to exp inclusive
    assert not signer.verify("t1/r1/a.png", exp, sig, now=NOW + 61)  # expired


def test_an_altered_path_expiry_signature_or_key_is_not_valid() -> None:
    signer = MediaSigner(KEY)
    exp, sig = _parts(signer.query("t1/r1/a.png", now=NOW))
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert not signer.verify("t1/r1/b.png", exp, sig, now=NOW)  # another path
    assert not signer.verify("t2/r1/a.png", exp, sig, now=NOW)  # another thread
    assert not signer.verify("t1/r1/a.png", str(int(exp) + 3600), sig, now=NOW)  # longer life
    assert not signer.verify("t1/r1/a.png", exp, flipped, now=NOW)
    assert not signer.verify("t1/r1/a.png", exp, sig.upper(), now=NOW)
    assert not MediaSigner(b"x" * 32).verify("t1/r1/a.png", exp, sig, now=NOW)
    for bad_exp, bad_sig in (
        (None, sig),
        (exp, None),
        ("", sig),
        ("-1", sig),
        ("1e9", sig),
        ("١٢٣", sig),  # non-ASCII digits
        ("9" * 40, sig),
        (exp, sig[:10]),
        (exp, "é" * 64),
    ):
        assert not signer.verify("t1/r1/a.png", bad_exp, bad_sig, now=NOW)


def test_the_key_and_lifetime_come_from_the_environment() -> None:
    secret = "s" * 40
    signer = MediaSigner.from_env({"CALLIOPE_MEDIA_SECRET": secret, "CALLIOPE_MEDIA_URL_TTL": "90"})
    assert (signer.key, signer.ttl) == (secret.encode(), 90)
    # two replicas with the same secret accept each other's URLs
    other = MediaSigner.from_env({"CALLIOPE_MEDIA_SECRET": secret})
    assert other.ttl == DEFAULT_TTL == 3600
    assert other.verify("t/a.png", *_parts(signer.query("t/a.png", now=NOW)), now=NOW)
    assert secret not in repr(signer)  # the key never shows in a repr, a log or a trace


def test_a_short_secret_or_a_bad_lifetime_is_refused_saying_how_to_fix_it() -> None:
    with pytest.raises(ConfigurationError, match="shorter than 32 characters") as short:
        MediaSigner.from_env({"CALLIOPE_MEDIA_SECRET": "hunter2"})
    assert "hunter2" not in str(short.value) and "token_urlsafe" in str(short.value)
    for ttl in ("soon", "0", "-5", "1.5"):
        with pytest.raises(ConfigurationError, match="CALLIOPE_MEDIA_URL_TTL"):
            MediaSigner.from_env({"CALLIOPE_MEDIA_SECRET": "s" * 40, "CALLIOPE_MEDIA_URL_TTL": ttl})


def test_without_a_secret_a_random_key_is_made_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="calliope_graph.serve"):
        first, second = MediaSigner.from_env({}), MediaSigner.from_env({})
    assert len(first.key) == 32 and first.key != second.key
    warned = [r.getMessage() for r in caplog.records if "CALLIOPE_MEDIA_SECRET" in r.getMessage()]
    assert len(warned) == 2
    assert "stop working when it ends" in warned[0] and "replicas" in warned[0]
    assert not second.verify("t/a.png", *_parts(first.query("t/a.png", now=NOW)), now=NOW)
