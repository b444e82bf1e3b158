"""Weights URLs: the cache key of a download, and credentials kept out of every message.

A URL may carry credentials: ``https://USER:PASSWORD@host/...`` or a token in its query
(``?token=...``, a signed ``X-Amz-Signature=...``). They are sent to the server (the user and
password as an ``Authorization`` header that is not forwarded on redirects) but never printed:
every message and progress label goes through :func:`redact`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

_SECRET_NAME = re.compile(
    r"token|key|sig|secret|pass|pwd|auth|cred|session|code|jwt|bearer", re.IGNORECASE
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def redact(url: str) -> str:
    """``url`` with its user, password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if _SECRET_NAME.search(k) and v else v) for k, v in pairs], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:  # not parseable as a URL: keep only what cannot be a secret
        return url.split("?", 1)[0].rsplit("@", 1)[-1]


def scrub(text: str, url: str) -> str:
    """``text`` (an error message from the network stack) with the secrets of ``url`` removed."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def without_credentials(url: str) -> tuple[str, str | None]:
    """(``url`` without ``user:password@``, the ``Authorization`` header value or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def normalise(url: str) -> str:
    """The same resource, always written the same way: lower-case scheme and host, no default
    port, no credentials, no fragment, canonical percent-escapes in the path; the query as given."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host += f":{parts.port}"
    path = _ESCAPE.sub(_unescape_unreserved, parts.path)  # %7E -> ~, but %2F stays (not /)
    path = quote(path, safe=_PATH_SAFE + "%") or "/"
    return urlunsplit((scheme, host, path, parts.query, ""))


def cache_key(url: str) -> str:
    """A short hash of the normalised ``url``: two different URLs never share a cached file."""
    return hashlib.sha256(normalise(url).encode()).hexdigest()[:24]


def _unescape_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match[1], 16))
    return char if char in _UNRESERVED else "%" + match[1].upper()


def _secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found |= {userinfo, unquote(userinfo)}
        found |= {p for s in userinfo.split(":", 1) for p in (s, unquote(s)) if p}
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if value and _SECRET_NAME.search(unquote_plus(key)):
            found |= {value, unquote_plus(value)}
    return {s for s in found if len(s) >= 3}
