"""Who signs a review on the dashboard (dashboard/identity.py): the login, a trusted proxy header, or a
typed name; and the refusals when a login or header is configured but the request lacks it."""

import pytest

from flagcore.dashboard.identity import (
    Identity,
    IdentityConfig,
    SigningRefused,
    identity_from,
    load_identity_config,
    typed,
)
from flagcore.errors import FlagcoreError

HEADER = IdentityConfig(trusted_header="X-Forwarded-Email")
LOGGED_IN = {"is_logged_in": True, "email": "ana@example.com", "name": "Ana"}


def test_the_login_signs_with_its_email_else_its_name():
    assert identity_from(LOGGED_IN, {}, IdentityConfig()) == Identity("ana@example.com", "oidc")
    assert identity_from({"is_logged_in": True, "name": "Ana"}, {}, IdentityConfig()).name == "Ana"
    # a login wins over a header a client could have sent itself
    assert identity_from(LOGGED_IN, {"X-Forwarded-Email": "eve@example.com"}, HEADER).source == "oidc"
    assert Identity("a", "oidc").label == "logged in"


def test_the_trusted_header_signs_case_insensitively_only_when_configured():
    got = identity_from({}, {"x-forwarded-email": " bo@example.com "}, HEADER)
    assert got == Identity("bo@example.com", "header") and got.label == "trusted proxy header"
    # not configured: a header sent by anyone is ignored, and the form asks for a typed name
    assert identity_from({}, {"X-Forwarded-Email": "eve@example.com"}, IdentityConfig()) is None
    assert typed("Rita").source == "typed" and typed("Rita").label == "typed name (unverified)"


def test_a_configured_header_or_login_missing_refuses_never_falls_back_to_a_typed_name():
    with pytest.raises(SigningRefused, match="no X-Forwarded-Email header") as e:
        identity_from({}, {"X-Forwarded-User": "bo"}, HEADER)
    assert not e.value.login and "\n" not in str(e.value)
    with pytest.raises(SigningRefused, match="Log in to sign") as e:
        identity_from({"is_logged_in": False}, {}, IdentityConfig())  # [auth] configured, logged out
    assert e.value.login
    with pytest.raises(SigningRefused, match="does not hold a usable name"):
        identity_from({}, {"X-Forwarded-Email": "  "}, HEADER)
    with pytest.raises(SigningRefused, match="does not hold a usable name"):
        identity_from({}, {"X-Forwarded-Email": "x" * 201}, HEADER)


def test_the_identity_section_of_the_team_config(tmp_path, monkeypatch):
    cfg = tmp_path / "team.toml"
    cfg.write_text('[review]\napprovals_required = 1\n[identity]\ntrusted_header = "X-Forwarded-Email"\n')
    assert load_identity_config(cfg) == HEADER
    monkeypatch.setenv("FLAGCORE_CONFIG", str(cfg))
    assert load_identity_config() == HEADER  # $FLAGCORE_CONFIG names it
    monkeypatch.delenv("FLAGCORE_CONFIG")
    assert load_identity_config() == IdentityConfig()  # no file: the header is off
    for text, match in [
        ('[identity]\ntrusted_heder = "X-Email"\n', "unknown \\[identity\\] key 'trusted_heder'"),
        ('[identity]\ntrusted_header = "X Email"\n', "must be an HTTP header name"),
        ("[identity]\ntrusted_header = 3\n", "must be an HTTP header name"),
        ("[identity\n", "not valid TOML"),
    ]:
        cfg.write_text(text)
        with pytest.raises(FlagcoreError, match=match) as e:
            load_identity_config(cfg)
        assert str(cfg) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FlagcoreError, match="no such team config file"):
        load_identity_config(tmp_path / "missing.toml")
