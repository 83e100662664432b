"""Pure parts of the token mechanisms (issue #16): the SASL responses' parsers, the RFC 7628
error object, the Dovecot files, and how the auth policy reads a token attempt. The protocol
end to end, with the real provider, Dovecot and gateway: tests/test_oauth_sasl.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from gateway.accept.auth import parse_oauthbearer, parse_xoauth2, token_error
from mailstore import config, oauth
from mailstore.authpolicy import LoginAttempt, _token_reason

ISSUER = "https://psc.example:9443"


def _settings(tmp_path: Path, **oidc: object) -> Settings:
    return Settings.load(data_dir=tmp_path, environ={}, **oidc)  # type: ignore[arg-type]


@pytest.fixture
def with_oidc(tmp_path: Path) -> Settings:
    return _settings(tmp_path, oidc_issuer=ISSUER + "/", oidc_client_id="mss",
                     oidc_client_secret="s3cret")


# ---------------------------------------------------------------------- parsers
def test_oauthbearer_with_authzid_and_other_pairs() -> None:
    blob = (b"n,a=marie.martin@mss.test,\x01host=mss.test\x01port=993\x01"
            b"auth=Bearer a.b-c_~+/==\x01\x01")
    bearer = parse_oauthbearer(blob)
    assert (bearer.authzid, bearer.token) == ("marie.martin@mss.test", "a.b-c_~+/==")
    assert "a.b-c" not in repr(bearer)  # never shown in a log line or a traceback


def test_oauthbearer_without_authzid_and_escapes() -> None:
    assert parse_oauthbearer(b"y,,\x01auth=bearer abc\x01\x01").authzid == ""
    assert parse_oauthbearer(b"n,a=x=2Cy=3Dz,\x01auth=Bearer abc\x01\x01").authzid == "x,y=z"


@pytest.mark.parametrize("blob", [
    b"p=tls-unique,,\x01auth=Bearer abc\x01\x01",  # channel binding: not offered
    b"n,,\x01auth=Bearer abc\x01",  # not terminated
    b"n,,auth=Bearer abc\x01\x01",  # no kvsep after the gs2 header
    b"n,a=x=41,\x01auth=Bearer abc\x01\x01",  # bad saslname escape (RFC 5801)
    b"n,,\x01auth=Basic abc\x01\x01",  # not a bearer token
    b"n,,\x01auth=Bearer a b\x01\x01",  # not a b64token (RFC 6750 §2.1)
    b"n,,\x01auth=Bearer abc\x01auth=Bearer def\x01\x01",  # twice
    b"n,,\x01host=x\x01\x01",  # no token at all
    b"n,,\x01h0st=x\x01auth=Bearer abc\x01\x01",  # RFC 7628 §3.1: key = 1*ALPHA
    b"n,,\x01auth=Bearer \xff\x01\x01",  # not UTF-8
])
def test_oauthbearer_refused(blob: bytes) -> None:
    with pytest.raises(ValueError):
        parse_oauthbearer(blob)


def test_xoauth2() -> None:
    bearer = parse_xoauth2(b"user=marie.martin@mss.test\x01auth=Bearer abc\x01vendor=x\x01\x01")
    assert (bearer.authzid, bearer.token) == ("marie.martin@mss.test", "abc")


@pytest.mark.parametrize("blob", [
    b"auth=Bearer abc\x01\x01",  # Google's format requires the user
    b"user=marie\x01auth=Bearer abc\x01",  # not terminated
    b"user=marie\x01\x01",  # no token
    b"user=marie\x01auth=Bearer abc\ndef\x01\x01",
])
def test_xoauth2_refused(blob: bytes) -> None:
    with pytest.raises(ValueError):
        parse_xoauth2(blob)


# ---------------------------------------------------------------------- RFC 7628 error
def test_error_objects(with_oidc: Settings) -> None:
    assert json.loads(token_error(with_oidc, "OAUTHBEARER", "invalid_token")) == {
        "status": "invalid_token", "scope": "openid scope_all",
        "openid-configuration": f"{ISSUER}/.well-known/openid-configuration"}
    assert json.loads(token_error(with_oidc, "XOAUTH2", "invalid_token")) == {
        "status": "401", "schemes": "bearer", "scope": "openid scope_all"}


# ---------------------------------------------------------------------- Dovecot's files
def test_passdb_args(with_oidc: Settings) -> None:
    text = oauth.passdb_args(with_oidc, "http://127.0.0.1:4321", "hook-secret")
    lines = dict(line.split(" = ", 1) for line in text.splitlines())
    assert lines["introspection_url"] == "http://127.0.0.1:4321" + oauth.PATH
    assert lines["introspection_mode"] == "post" and lines["client_secret"] == "hook-secret"
    assert lines["username_attribute"] == "username" and lines["send_auth_headers"] == "yes"
    assert lines["openid_configuration_url"] == f"{ISSUER}/.well-known/openid-configuration"


def _auth_section(settings: Settings, tokens: bool) -> str:
    paths = config.DovecotPaths.from_settings(settings)
    return config._auth(paths, config.Options(), tokens=tokens)


def test_token_mechanisms_only_with_a_provider(with_oidc: Settings) -> None:
    with_tokens = _auth_section(with_oidc, True)
    assert "auth_mechanisms = plain login external oauthbearer xoauth2" in with_tokens
    assert "driver = oauth2" in with_tokens and "mechanisms = oauthbearer xoauth2" in with_tokens
    without = _auth_section(with_oidc, False)
    assert "oauth" not in without


def test_remote_keys_match() -> None:
    """X-Dovecot-Auth-Remote (net_ipport2str) and the policy's rip/rport name one client."""
    assert oauth.parse_remote("127.0.0.1:5678") == oauth.remote_key("127.0.0.1", "5678")
    assert oauth.parse_remote("[::1]:5678") == oauth.remote_key("::1", "5678")


# ---------------------------------------------------------------------- policy reports
def _attempt(login: str) -> LoginAttempt:
    return LoginAttempt.from_json({"login": login, "mech": "xoauth2", "remote": "127.0.0.1",
                                   "rport": "5678", "tls": True})


@pytest.mark.parametrize(("outcome", "reason"), [
    (None, "malformed"),
    (oauth.TokenOutcome("ok", "marie.martin@mss.test"), "authzid_not_allowed"),
    (oauth.TokenOutcome("invalid"), "token_invalid"),
    (oauth.TokenOutcome("unavailable"), "token_unavailable"),
    (oauth.TokenOutcome("no_account", national_id="810000000099"), "no_account"),
    (oauth.TokenOutcome("mailbox_suspended", "paul.durand@mss.test"), "mailbox_suspended"),
])
def test_token_reason(outcome: oauth.TokenOutcome | None, reason: str) -> None:
    attempt = _attempt("paul.durand@mss.test")
    assert attempt.by_token and attempt.port == "5678"
    assert _token_reason(attempt, outcome) == reason

