"""chalicelib/upstream.py's address vetting, which every upstream request, token realm and
redirect goes through (no network: only literal addresses and localhost are resolved)."""
from __future__ import annotations

import pytest

from chalicelib.upstream import UpstreamError, _challenge, check_url, retry_after

REFUSED = ["http://169.254.169.254/latest/meta-data/",           # EC2/ECS metadata (IPv4)
           "https://169.254.170.2/v2/credentials",               # ECS task credentials
           "https://[fd00:ec2::254]/latest/meta-data/",          # EC2 metadata (IPv6)
           "https://[::ffff:169.254.169.254]/",                  # IPv4-mapped metadata
           "https://[fe80::1]/", "https://0.0.0.0/", "https://224.0.0.1/",
           "ftp://registry.example/", "file:///etc/passwd"]


@pytest.mark.parametrize("url", REFUSED)
def test_link_local_metadata_and_odd_addresses_are_never_contacted(url, monkeypatch):
    monkeypatch.setenv("BERTH_MIRROR_ALLOW_LOOPBACK", "1")     # even with the tests' setting
    with pytest.raises(UpstreamError) as refused:
        check_url(url, trusted_host="169.254.169.254")
    assert refused.value.kind == "refused"


def test_loopback_and_plain_http_only_with_the_explicit_setting(monkeypatch):
    monkeypatch.delenv("BERTH_MIRROR_ALLOW_LOOPBACK", raising=False)
    for url in ("http://127.0.0.1:5000/v2/", "https://localhost/v2/", "https://[::1]/"):
        with pytest.raises(UpstreamError):
            check_url(url, trusted_host="127.0.0.1")
    monkeypatch.setenv("BERTH_MIRROR_ALLOW_LOOPBACK", "1")
    target = check_url("http://localhost:5000/v2/x?y=1", trusted_host="localhost")
    assert (target.scheme, target.host, target.port, target.path) == (
        "http", "localhost", 5000, "/v2/x?y=1")
    assert target.ip in ("127.0.0.1", "::1")       # connected to by this vetted address


def test_private_addresses_only_for_the_rules_own_host(monkeypatch):
    monkeypatch.delenv("BERTH_MIRROR_ALLOW_LOOPBACK", raising=False)
    assert check_url("https://10.1.2.3/v2/", trusted_host="10.1.2.3").ip == "10.1.2.3"
    with pytest.raises(UpstreamError):     # a realm or redirect the upstream chose
        check_url("https://10.1.2.3/v2/", trusted_host="registry.example")
    with pytest.raises(UpstreamError):     # plain http to anything but loopback, never
        check_url("http://10.1.2.3/v2/", trusted_host="10.1.2.3")


def test_challenge_and_retry_after_parsing():
    scheme, params = _challenge('Bearer realm="https://auth.docker.io/token",'
                                'service="registry.docker.io",scope="repository:library/a:pull"')
    assert scheme == "bearer" and params == {"realm": "https://auth.docker.io/token",
                                             "service": "registry.docker.io",
                                             "scope": "repository:library/a:pull"}
    assert retry_after("30") == 30 and retry_after(None) is None and retry_after("soon") is None
