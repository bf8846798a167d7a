"""Finding the login docker stores for a registry, as `berth proxy` does (berth_local/dockercreds.py).

config.json is written the way the docker CLI writes it; credential helpers are the real
`docker-credential-pass` (Debian's golang-docker-credential-helpers, unpacked into .cache/ by
`make system-deps`) on a throwaway GnuPG key and password store: the helper docker itself calls on
`docker login` when config.json says so.
"""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from berth_local.dockercreds import (Challenge, Credentials, CredentialsError, RegistryAuth,
                                     docker_config_dir, find_credentials, parse_challenge,
                                     scopes_for)
from tests.support.credhelper import pass_credential_store


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("key", ["registry.example.com:5000", "https://registry.example.com:5000",
                                 "http://registry.example.com:5000/v1/", "Registry.Example.com:5000"])
def test_an_auths_entry_is_found_under_every_key_docker_has_written(tmp_path, key):
    folder = write_config(tmp_path, {"auths": {"other.example.com:5000": {"auth": b64("eve:no")},
                                               key: {"auth": b64("alice:pa:ss")}}})
    assert find_credentials("registry.example.com:5000", folder) == Credentials("alice", "pa:ss")
    assert find_credentials("registry.example.com", folder) is None      # another port: another host


def test_username_password_and_identity_token_entries(tmp_path):
    folder = write_config(tmp_path, {"auths": {
        "a.example.com": {"username": "bob", "password": "pw"},
        "b.example.com": {"auth": b64("carol:pw"), "identitytoken": "refresh-1"}}})
    assert find_credentials("a.example.com", folder) == Credentials("bob", "pw")
    assert find_credentials("b.example.com", folder) == Credentials("carol", "refresh-1", identity_token=True)


def test_no_config_no_entry_and_broken_configs(tmp_path):
    assert find_credentials("registry.example.com", tmp_path / "nothing") is None
    assert find_credentials("registry.example.com", write_config(tmp_path / "e", {})) is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="cannot read"):
        find_credentials("registry.example.com", tmp_path / "bad")
    folder = write_config(tmp_path / "b64", {"auths": {"registry.example.com": {"auth": "!!!"}}})
    with pytest.raises(CredentialsError, match="not base64"):
        find_credentials("registry.example.com", folder)


def test_the_secret_is_never_in_a_repr():
    assert "s3cret" not in repr(Credentials("alice", "s3cret"))


def test_docker_config_folder(monkeypatch, tmp_path):
    assert docker_config_dir({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path
    assert docker_config_dir({}) == Path.home() / ".docker"


def test_a_missing_helper_is_a_clear_error(tmp_path):
    folder = write_config(tmp_path, {"credHelpers": {"registry.example.com": "berth-test-absent"}})
    with pytest.raises(CredentialsError, match="docker-credential-berth-test-absent is not installed"):
        find_credentials("registry.example.com", folder)


@pytest.fixture
def pass_store(tmp_path, monkeypatch):
    with pass_credential_store(tmp_path / "pass", monkeypatch):
        yield


def helper_store(host: str, username: str, secret: str) -> None:
    """What `docker login` does with a credential helper: `docker-credential-pass store`."""
    entry = json.dumps({"ServerURL": host, "Username": username, "Secret": secret})
    subprocess.run(["docker-credential-pass", "store"], input=entry.encode(), check=True,
                   capture_output=True)


def test_credential_helpers_as_docker_uses_them(pass_store, tmp_path):
    helper_store("registry.example.com:5000", "alice", "from the keychain")
    helper_store("tokens.example.com", "<token>", "refresh-2")
    per_host = write_config(tmp_path / "per-host", {
        "auths": {"registry.example.com:5000": {"auth": b64("alice:stale")}},
        "credHelpers": {"registry.example.com:5000": "pass", "tokens.example.com": "pass"}})
    assert find_credentials("registry.example.com:5000", per_host) == Credentials("alice", "from the keychain")
    assert find_credentials("tokens.example.com", per_host) == Credentials("<token>", "refresh-2", True)
    store = write_config(tmp_path / "store", {
        "credsStore": "pass", "auths": {"registry.example.com:5000": {}, "old.example.com": {"auth": b64("o:pw")}}})
    assert find_credentials("registry.example.com:5000", store) == Credentials("alice", "from the keychain")
    assert find_credentials("old.example.com", store) == Credentials("o", "pw")   # not in the helper
    assert find_credentials("unknown.example.com", store) is None


def test_scopes_of_requests():
    assert scopes_for("GET", "/v2/") == ()
    assert scopes_for("GET", "/v2/_catalog") == ()
    assert scopes_for("POST", "/v2/alice/big/blobs/uploads/") == ("repository:alice/big:pull,push",)
    assert scopes_for("PATCH", "/v2/alice/big/blobs/uploads/abc") == ("repository:alice/big:pull,push",)
    assert scopes_for("PUT", "/v2/a/b/c/manifests/v1") == ("repository:a/b/c:pull,push",)
    assert scopes_for("HEAD", "/v2/a/b/c/blobs/sha256:ab") == ("repository:a/b/c:pull",)
    assert scopes_for("GET", "/v2/a/b/c/manifests/v1") == ("repository:a/b/c:pull",)
    assert scopes_for("GET", "/v2/a/blobs/uploads/abc") == ("repository:a:pull,push",)   # upload status
    assert scopes_for("DELETE", "/v2/a/blobs/uploads/abc") == ("repository:a:pull,push",)
    assert scopes_for("DELETE", "/v2/a/manifests/sha256:ab") == ("repository:a:delete",)
    assert scopes_for("POST", "/v2/alice/big/blobs/uploads/", "mount=sha256:ab&from=bob/base") == \
        ("repository:alice/big:pull,push", "repository:bob/base:pull")
    assert scopes_for("GET", "/v2/alice/blobs/x/tags/list") == ("repository:alice/blobs/x:pull",)


def test_challenges():
    assert parse_challenge('Bearer realm="https://r.example.com/token?a=1,2",service="berth"') == \
        Challenge("bearer", "https://r.example.com/token?a=1,2", "berth")
    assert parse_challenge('Basic realm="registry"') == Challenge("basic", "registry", "")
    assert parse_challenge("Negotiate abc") is None and parse_challenge(None) is None


def test_credentials_never_go_to_a_plain_http_realm_of_an_https_registry():
    auth = RegistryAuth("https://registry.example.com", "registry.example.com",
                        lookup=lambda: Credentials("alice", "pw"))
    value, _ = auth._authorize(Challenge("bearer", "http://127.0.0.1:9/token", "s"),
                               Credentials("alice", "pw"), ())
    assert value is None        # refused before any connection (port 9 would fail otherwise)
