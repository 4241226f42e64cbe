"""Who is signing a review on the dashboard, and where that name came from.

Three paths, strongest first (the README's "Reviewer identity"):

- ``oidc``: Streamlit's OIDC login is configured (``[auth]`` in ``.streamlit/secrets.toml``) and the
  user is logged in: the name is ``st.user``'s email claim, else its name claim.
- ``header``: the team config (``$FLAGCORE_CONFIG``) names a trusted header under ``[identity]``,
  ``trusted_header = "X-Forwarded-Email"`` for example, set by an authenticating reverse proxy
  (oauth2-proxy's convention). Off unless configured: anyone who reaches the server directly can
  send any header.
- neither configured: no identity; the form asks for a name and the review is stored ``typed``,
  shown "unverified".

When a login or a header is configured but this request has neither, signing is refused with one
line (:class:`SigningRefused`): the form never falls back to a typed name.

:func:`identity_from` is the rule, pure (tests call it with plain dicts); :func:`reviewer_identity`
feeds it ``st.user``, ``st.context.headers`` and the team config of this request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagcore.analysis.review_policy import CONFIG_ENV, read_team_config, team_config_path
from flagcore.errors import FlagcoreError
from flagcore.vocab import IDENTITY_SOURCES

IDENTITY_KEYS = ("trusted_header",)
MAX_NAME = 200  # as the store's reviewer column (Store.add_review)
# an HTTP header name (RFC 9110 token): letters, digits and !#$%&'*+-.^_`|~
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class Identity:
    """A reviewer's name and where it came from (a key of ``vocab.IDENTITY_SOURCES``)."""

    name: str
    source: str

    @property
    def label(self) -> str:
        """The source in words: "logged in", "trusted proxy header", "typed name (unverified)"."""
        return IDENTITY_SOURCES[self.source]


@dataclass(frozen=True)
class IdentityConfig:
    """The team config's ``[identity]`` section: the trusted header's name, or None (off)."""

    trusted_header: str | None = None


class SigningRefused(FlagcoreError):
    """A login or trusted header is configured, but this request does not carry one: the form must
    not offer a typed name instead. ``login`` is True when logging in would fix it."""

    def __init__(self, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.login = login


def load_identity_config(path: str | Path | None = None) -> IdentityConfig:
    """The ``[identity]`` section of the team config (``path``, else ``$FLAGCORE_CONFIG``); no file
    or no section: the header is off.

    Raises FlagcoreError naming the file and key for a missing file, bad TOML, an unknown section
    or key, or a header name that is not an HTTP token.

    Examples
    --------
    A file holding ``[identity]`` and ``trusted_header = "X-Forwarded-Email"`` gives
    ``IdentityConfig(trusted_header="X-Forwarded-Email")``.
    """
    section = read_team_config(path).get("identity", {})
    where = team_config_path(path)
    unknown = sorted(set(section) - set(IDENTITY_KEYS))
    if unknown:
        raise FlagcoreError(
            f"{where}: unknown [identity] key {unknown[0]!r}; known: {', '.join(IDENTITY_KEYS)}"
        )
    header = section.get("trusted_header")
    if header is None or header == "":
        return IdentityConfig()
    if not isinstance(header, str) or not _HEADER_NAME.match(header):
        raise FlagcoreError(
            f"{where}: [identity] trusted_header must be an HTTP header name such as "
            f'"X-Forwarded-Email", got {header!r}'
        )
    return IdentityConfig(trusted_header=header)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name matched case-insensitively (HTTP header names are)."""
    want = name.lower()
    found = None
    for k, v in headers.items():
        if k.lower() == want:
            found = v  # a repeated header: the last one, as st.context.headers gives it
    return found


def _clean(name: Any, where: str) -> str:
    text = str(name).strip()
    if not text or len(text) > MAX_NAME or any(ch in text for ch in "\r\n\t"):
        raise SigningRefused(f"{where} does not hold a usable name ({len(text)} characters); signing is off")
    return text


def identity_from(
    user: Mapping[str, Any], headers: Mapping[str, str], config: IdentityConfig
) -> Identity | None:
    """The reviewer of this request, or None when neither a login nor a trusted header is configured.

    ``user`` is ``st.user`` as a dict: it holds ``is_logged_in`` only when ``[auth]`` is configured.
    ``headers`` are the request's headers; ``config`` the team config's ``[identity]``.
    Raises :class:`SigningRefused` (one line) when a login or header is configured but missing here.

    Examples
    --------
    >>> identity_from({"is_logged_in": True, "email": "ana@example.com"}, {}, IdentityConfig())
    Identity(name='ana@example.com', source='oidc')
    >>> cfg = IdentityConfig(trusted_header="X-Forwarded-Email")
    >>> identity_from({}, {"x-forwarded-email": "bo@example.com"}, cfg)
    Identity(name='bo@example.com', source='header')
    >>> identity_from({}, {}, IdentityConfig()) is None
    True
    """
    login_configured = "is_logged_in" in user
    if login_configured and user.get("is_logged_in"):
        claim = user.get("email") or user.get("name")
        return Identity(_clean(claim or "", "The login's email and name claims"), "oidc")
    if config.trusted_header:
        value = _header(headers, config.trusted_header)
        if value is None:
            raise SigningRefused(
                f"This request has no {config.trusted_header} header (the trusted header in "
                f"${CONFIG_ENV}): open the dashboard through the team's proxy to sign"
            )
        return Identity(_clean(value, f"The {config.trusted_header} header"), "header")
    if login_configured:
        raise SigningRefused("Log in to sign: this dashboard signs reviews with the login", login=True)
    return None


def typed(name: str) -> Identity:
    """A name typed into the form: stored ``typed``, shown unverified (validated by the store)."""
    return Identity(name, "typed")


def request_headers() -> Mapping[str, str]:
    """The headers of the request that opened this session (``st.context.headers``)."""
    import streamlit as st

    return st.context.headers


def reviewer_identity() -> Identity | None:
    """The reviewer of the current Streamlit request (:func:`identity_from` over ``st.user``,
    the request's headers and the team config); None: ask for a typed name. Raises
    :class:`SigningRefused`, or a FlagcoreError for a bad team config. Called on every run, the
    submit's included, so a form cannot carry an identity over from an earlier request."""
    import streamlit as st

    config = load_identity_config()
    return identity_from(st.user.to_dict(), request_headers(), config)
