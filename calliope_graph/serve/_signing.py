"""Signed media URLs: ``?exp=<unix seconds>&sig=<hex HMAC-SHA256>`` over the path and expiry.

Every media URL the server hands out carries an expiry and a signature, so a browser
``<img src>`` loads it without headers while a guessed or altered URL is refused. The
signature is HMAC-SHA256 (the standard library's :mod:`hmac`, nothing hand-rolled) keyed
by ``CALLIOPE_MEDIA_SECRET``, over ``calliope-media-v1``, the file's path under the media
root (``<thread>/<run>/illustration.png``, unquoted) and ``exp``, each on its own line;
it is written as 64 lowercase hex digits. A signed URL is a capability: anyone holding it
reads the file until ``exp``, whoever they are.

Without ``CALLIOPE_MEDIA_SECRET`` the process makes a random key when it starts and warns:
its URLs stop working when the process ends, and replicas (or worker processes) that do
not share one key refuse each other's URLs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from calliope_graph.errors import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "MIN_SECRET_CHARS",
    "MediaSigner",
    "default_signer",
    "sign_path",
    "verify",
]

logger = logging.getLogger("calliope_graph.serve")

#: How long a media URL works by default (``CALLIOPE_MEDIA_URL_TTL``), in seconds.
DEFAULT_TTL = 3600
#: The shortest ``CALLIOPE_MEDIA_SECRET`` accepted (32 characters: 192 bits or more of a
#: ``secrets.token_urlsafe(32)``-style random string).
MIN_SECRET_CHARS = 32
_PURPOSE = b"calliope-media-v1"
_SIG_HEX = 64  # SHA-256 as hex
_MAX_EXP_DIGITS = 12  # a unix time beyond year 33000 is not an expiry, it is noise


@dataclass(frozen=True)
class MediaSigner:
    """Signs and checks media paths with one key; URLs last ``ttl`` seconds."""

    key: bytes = field(repr=False)
    ttl: int = DEFAULT_TTL

    def signature(self, path: str, exp: int) -> str:
        """The hex HMAC-SHA256 of ``path`` (under the media root) expiring at ``exp``."""
        message = b"\n".join((_PURPOSE, path.encode("utf-8"), str(exp).encode("ascii")))
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def query(self, path: str, now: float | None = None) -> str:
        """The URL query (``exp=...&sig=...``) that lets ``path`` be read for ``ttl`` s."""
        exp = int(time.time() if now is None else now) + self.ttl
        return urlencode({"exp": exp, "sig": self.signature(path, exp)})

    def verify(self, path: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
        """Whether ``sig`` signs ``path`` until ``exp`` and ``exp`` has not passed.

        The signature is compared in constant time (:func:`hmac.compare_digest`); a
        malformed ``exp`` or ``sig`` is simply not valid.
        """
        if not exp or not sig or len(sig) != _SIG_HEX or len(exp) > _MAX_EXP_DIGITS:
            return False
        if not exp.isascii() or not exp.isdigit():
            return False
        expected = self.signature(path, int(exp)).encode("ascii")
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            return False
        return (time.time() if now is None else now) <= int(exp)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MediaSigner:
        """``CALLIOPE_MEDIA_SECRET`` and ``CALLIOPE_MEDIA_URL_TTL``; without a secret, a
        random key for this process (with a warning saying what that costs)."""
        env = os.environ if environ is None else environ
        ttl_text = (env.get("CALLIOPE_MEDIA_URL_TTL") or "").strip()
        ttl = DEFAULT_TTL
        if ttl_text:
            if not ttl_text.isdigit() or int(ttl_text) <= 0:
                raise ConfigurationError(
                    f"CALLIOPE_MEDIA_URL_TTL={ttl_text!r} is not a number of seconds: set a "
                    f"positive whole number (default {DEFAULT_TTL})."
                )
            ttl = int(ttl_text)
        secret = env.get("CALLIOPE_MEDIA_SECRET") or ""
        if not secret:
            logger.warning(
                "CALLIOPE_MEDIA_SECRET is not set: media URLs are signed with a random key "
                "made by this process, so they stop working when it ends, and replicas or "
                "worker processes refuse each other's URLs. Set CALLIOPE_MEDIA_SECRET to one "
                "random value shared by every replica."
            )
            return cls(key=secrets.token_bytes(32), ttl=ttl)
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"CALLIOPE_MEDIA_SECRET is shorter than {MIN_SECRET_CHARS} characters: use a "
                "long random value, e.g. the output of "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'."
            )
        return cls(key=secret.encode("utf-8"), ttl=ttl)


@functools.cache
def default_signer() -> MediaSigner:
    """The process's signer, read from the environment once (so a random key is made once,
    and the graphs and the media route of one process share it).

    A read-only process memo rather than part of the server's session: LangGraph Server
    imports the graphs (``graphs/server.py``) and the media routes (``serve/app.py``) as two
    separate entry points that share nothing but the process, and without
    ``CALLIOPE_MEDIA_SECRET`` both must sign with the same random key."""
    return MediaSigner.from_env()


def sign_path(path: str, now: float | None = None) -> str:
    """The URL query signing ``path`` (under the media root) with the process's key."""
    return default_signer().query(path, now)


def verify(path: str, exp: str | None, sig: str | None, now: float | None = None) -> bool:
    """Whether ``exp``/``sig`` are a valid, unexpired signature of ``path`` (process's key)."""
    return default_signer().verify(path, exp, sig, now)
