"""How a database URL is shown: never with a credential in it.

A SQLAlchemy URL can carry a secret in three places: the password of ``user:pw@host``,
query items such as ``?password=`` / ``sslpassword=`` / ``passfile=``, and (when a
password holds an unencoded ``@``) a tail that SQLAlchemy's parser takes for the host,
which a driver's error then quotes as a host name: a driver's text is redacted with the
URL it is about, so every piece of its password is hidden there too.
Everything the tool prints, stores or copies from another database goes through
:func:`redact` (free text, e.g. a stored command line) or :func:`shown_url` (one URL).
Redaction errs on the side of hiding too much.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import URL

_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"]*")
"""A URL inside free text: a scheme, then everything up to a space or a quote."""

_SECRET_QUERY = re.compile(
    r"([?&;](?:[\w.-]*(?:password|passwd|pwd|passfile|secret|token)[\w.-]*)=)[^&;\s'\"]*",
    re.IGNORECASE)
"""A query item whose name says it holds a credential (``password=``, ``sslpassword=``,
``passfile=``, ``api_token=``...): its value is hidden."""

HIDDEN = "***"


_MIN_FRAGMENT = 3
"""Pieces of a password shorter than this are not masked in free text (they would mask
ordinary letters); a URL's own password field always is."""


def _userinfo(rest: str) -> tuple[str, str, str, str] | None:
    """(user, ':' or '', password, host and what follows) of a URL's part after '://';
    None without credentials. They end at the *last* '@': a password may hold an
    unencoded '@' (SQLAlchemy splits at the first one and takes the rest for the host)."""
    if "@" not in rest:
        return None
    cred, _, tail = rest.rpartition("@")
    user, colon, secret = cred.partition(":")
    return user, colon, secret, tail


def _credentials(url: str) -> list[str]:
    """The secrets a URL carries: its password and the values of query items that hold
    one."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    found = [m[0].partition("=")[2] for m in _SECRET_QUERY.finditer(rest)]
    parts = _userinfo(rest.split("?", 1)[0])
    if parts is not None and parts[1]:
        found.append(parts[2])
    return [f for f in found if f]


def secrets_of(url: str) -> list[str]:
    """What to mask in text about ``url`` beyond the URL itself: each credential whole and
    each piece of it between '@' signs (a driver quotes the part SQLAlchemy took for the
    host), as written and decoded, longest first."""
    out: set[str] = set()
    for secret in _credentials(url):
        for form in {secret, unquote(secret)}:
            out.update(p for p in (form, *form.split("@")) if len(p) >= _MIN_FRAGMENT)
    return sorted(out, key=len, reverse=True)


def _redact_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    parts = _userinfo(rest)
    if parts is not None:
        user, colon, _secret, tail = parts
        rest = f"{user}{colon and ':' + HIDDEN}@{tail}"
    return f"{scheme}://{_SECRET_QUERY.sub(lambda m: m[1] + HIDDEN, rest)}"


def redact(text: str, url: str | None = None) -> str:
    """``text`` with every credential of every URL in it hidden (password, and query
    items that carry one); with ``url`` (the database the text is about: a driver's
    error), also every credential of ``url`` wherever it appears (:func:`secrets_of`)."""
    text = _URL.sub(lambda m: _redact_one(m[0]), text)
    for secret in secrets_of(url) if url else ():
        text = text.replace(secret, HIDDEN)
    return text


def shown_url(url: URL | str | Any) -> str:
    """How messages, tables and reports name a database: a SQLite file by its plain path
    (not URL-encoded), a server URL with every credential hidden."""
    if isinstance(url, str):
        return redact(url)
    path = sqlite_path(url)
    if path is not None:
        return path
    return redact(url.render_as_string(hide_password=False))


def sqlite_path(url: URL) -> str | None:
    """The file a SQLite URL opens (None for a server, or an in-memory database); a
    ``file:`` URI (``?uri=true``, how an import source is opened read-only) is decoded."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    name = url.database
    if name.startswith("file:"):
        name = name.removeprefix("file:").split("?")[0]
        if url.query.get("uri") == "true":
            name = unquote(name)
    return name
