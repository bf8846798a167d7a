"""A client of an upstream registry (a mirror rule's), with the standard library only.

What it speaks: distribution's token flow (anonymous or with credentials: `WWW-Authenticate:
Bearer realm,service,scope` on a 401, then GET <realm>), HTTP basic auth, no auth; 307/302
redirects of blob GETs (Docker Hub sends them to its CDN); 429 with Retry-After.

No SSRF: every address it connects to is resolved, checked and then connected to by that very
IP (no second DNS lookup a rebinding could change):
  - the rule's upstream host: https (http and loopback only with BERTH_MIRROR_ALLOW_LOOPBACK=1,
    the tests' local upstreams); never a link-local, metadata, multicast or unspecified address;
  - the token realm and redirect targets are chosen by the upstream, so additionally they must be
    public addresses (private ranges only when the host is the upstream's own);
  - credentials go only to the upstream's host and its realm, never along a redirect.
Credentials and tokens are never logged or put into an error message.
"""
from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Dict, Iterator, Optional, Tuple
from urllib.parse import urlencode, urljoin, urlsplit

from chalicelib import oci

TIMEOUT = 8.0                    # seconds per connect / read: a Lambda request has 29 in all
MAX_REDIRECTS = 3
READ_CHUNK = 1024 * 1024
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})
MANIFEST_ACCEPT = ", ".join([oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST,
                             oci.DOCKER_MANIFEST])


class UpstreamError(Exception):
    """The upstream could not answer: `kind` is unavailable | toomanyrequests | unknown |
    denied | refused (an address Berth will not contact) | invalid (a bad answer)."""

    def __init__(self, kind: str, message: str, retry_after: Optional[int] = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


def allow_loopback() -> bool:
    return os.environ.get("BERTH_MIRROR_ALLOW_LOOPBACK", "") in ("1", "true", "yes")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    ip: str
    path: str          # path and query

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _refused(host: str, why: str) -> UpstreamError:
    return UpstreamError("refused", f"refusing to contact {host}: {why}")


def check_url(url: str, *, trusted_host: Optional[str] = None) -> Target:
    """Resolve and vet `url`. `trusted_host`: the rule's own upstream host, the only one that may
    be on a private network; anything else (realm, redirect) must be a public address."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise _refused(url[:100], "no host")
    if parts.scheme not in ("https", "http"):
        raise _refused(host, f"scheme {parts.scheme!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UpstreamError("unavailable", f"cannot resolve {host}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if (address in METADATA_ADDRESSES or address.is_link_local or address.is_multicast
                or address.is_unspecified or address.is_reserved):
            raise _refused(host, f"{address} is a link-local/metadata or reserved address")
        if address.is_loopback:
            if not allow_loopback():
                raise _refused(host, "loopback addresses are not upstreams")
        elif address.is_private and host != trusted_host:
            raise _refused(host, f"{address} is a private address")
    if parts.scheme == "http" and not (allow_loopback() and all(a.is_loopback for a in addresses)):
        raise _refused(host, "plain http (only https upstreams are contacted)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, str(addresses[0]), path)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._ip = target.ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=ssl.create_default_context())
        self._ip = target.ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Answer:
    status: int
    headers: Dict[str, str]          # lower-case names
    response: http.client.HTTPResponse = field(repr=False)
    connection: http.client.HTTPConnection = field(repr=False)
    url: str = ""
    authorized: bool = False         # the request carried an Authorization header

    def read(self, limit: int) -> bytes:
        try:
            data = self.response.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError("unavailable", f"reading from {self.url}: {exc}") from None
        finally:
            self.close()
        if len(data) > limit:
            raise UpstreamError("invalid", f"{self.url} answered more than {limit} bytes")
        return data

    def chunks(self) -> Iterator[bytes]:
        try:
            while True:
                data = self.response.read(READ_CHUNK)
                if not data:
                    return
                yield data
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError("unavailable", f"reading from {self.url}: {exc}") from None
        finally:
            self.close()

    def close(self) -> None:
        self.connection.close()


def _send(method: str, url: str, headers: Dict[str, str], trusted_host: str,
          timeout: float = TIMEOUT) -> Answer:
    target = check_url(url, trusted_host=trusted_host)
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target, timeout)
    try:
        conn.request(method, target.path, headers={"User-Agent": "berth-mirror", **headers})
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise UpstreamError("unavailable", f"{target.host}:{target.port} did not answer "
                            f"({type(exc).__name__})") from None
    return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response,
                  conn, f"{target.scheme}://{target.host}:{target.port}",
                  authorized="Authorization" in headers)


def retry_after(value: Optional[str]) -> Optional[int]:
    if not value:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    try:
        return max(0, int(parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


def _challenge(header: str) -> Tuple[str, Dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: Dict[str, str] = {}
    for part in _split_params(rest):
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return scheme.lower(), params


def _split_params(text: str):
    current, quoted = "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            yield current
            current = ""
        else:
            current += ch
    if current.strip():
        yield current


_tokens: Dict[Tuple[str, str, str], Tuple[str, float]] = {}
_tokens_lock = threading.Lock()


class Upstream:
    """One upstream registry, as a rule names it, with optional credentials."""

    def __init__(self, base: str, credentials: Optional[Tuple[str, str]] = None) -> None:
        self.base = base.rstrip("/")
        self.host = (urlsplit(self.base).hostname or "").lower()
        self.credentials = credentials

    # -------------------------------------------------------- auth

    def _basic(self) -> str:
        user, password = self.credentials or ("", "")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _token_key(self, scope: str) -> Tuple[str, str, str]:
        return (self.base, scope, self.credentials[0] if self.credentials else "")

    def _cached_token(self, scope: str) -> Optional[str]:
        with _tokens_lock:
            token, expires = _tokens.get(self._token_key(scope), ("", 0.0))
        return token if token and expires > time.time() + 5 else None

    def _fetch_token(self, params: Dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise UpstreamError("invalid", f"{self.base} sent a Bearer challenge without realm")
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": self._basic()} if self.credentials else {}
        answer = _send("GET", url, headers, self.host)
        if answer.status in (401, 403):
            answer.close()
            raise UpstreamError("denied", f"{self.base} refused Berth's credentials for {scope}"
                                if self.credentials else f"{self.base} requires credentials")
        if answer.status == 429:
            answer.close()
            raise UpstreamError("toomanyrequests", f"{self.base} rate-limited the token request",
                                retry_after(answer.headers.get("retry-after")))
        if answer.status != 200:
            answer.close()
            raise UpstreamError("unavailable", f"{self.base}'s token endpoint answered "
                                f"{answer.status}")
        try:
            doc = json.loads(answer.read(64 * 1024))
            token = doc.get("token") or doc["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise UpstreamError("invalid", f"{self.base}'s token endpoint sent no token") from None
        ttl = doc.get("expires_in") if isinstance(doc.get("expires_in"), int) else 60
        with _tokens_lock:
            _tokens[self._token_key(scope)] = (token, time.time() + max(ttl, 10))
        return token

    def request(self, method: str, path: str, repository: str,
                headers: Optional[Dict[str, str]] = None) -> Answer:
        """`method` on <base>/v2/<path>, answering the upstream's auth challenge; redirects are
        returned, not followed."""
        scope = f"repository:{repository}:pull"
        url = f"{self.base}/v2/{path}"
        headers = dict(headers or {})
        token = self._cached_token(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = _send(method, url, headers, self.host)
        if answer.status == 401:
            scheme, params = _challenge(answer.headers.get("www-authenticate", ""))
            answer.close()
            if scheme == "bearer":
                headers["Authorization"] = f"Bearer {self._fetch_token(params, scope)}"
            elif scheme == "basic" and self.credentials:
                headers["Authorization"] = self._basic()
            else:
                raise UpstreamError("denied", f"{self.base} requires credentials")
            answer = _send(method, url, headers, self.host)
            if answer.status == 401:
                answer.close()
                raise UpstreamError("denied", f"{self.base} refused access to {repository}")
        self._raise_for_status(answer, repository)
        return answer

    def _raise_for_status(self, answer: Answer, repository: str) -> None:
        if answer.status == 429:
            answer.close()
            raise UpstreamError("toomanyrequests", f"{self.base} answered 429 Too Many Requests",
                                retry_after(answer.headers.get("retry-after")))
        if answer.status == 404:
            answer.close()
            raise UpstreamError("unknown", f"{self.base} does not have this in {repository}")
        if answer.status in (403,):
            answer.close()
            raise UpstreamError("denied", f"{self.base} refused access to {repository}")
        if answer.status >= 500:
            answer.close()
            raise UpstreamError("unavailable", f"{self.base} answered {answer.status}")

    # -------------------------------------------------------- registry operations

    def manifest(self, repository: str, reference: str, accept: Optional[str],
                 method: str = "GET") -> Tuple[Optional[str], str, bytes]:
        """(digest the upstream states, media type, body) of a manifest; HEAD: empty body."""
        answer = self.request(method, f"{repository}/manifests/{reference}", repository,
                              {"Accept": accept or MANIFEST_ACCEPT})
        if answer.status != 200:
            answer.close()
            raise UpstreamError("invalid", f"{self.base} answered {answer.status} for a manifest")
        digest = answer.headers.get("docker-content-digest")
        media_type = (answer.headers.get("content-type") or "").split(";")[0].strip()
        body = b"" if method == "HEAD" else answer.read(oci.MANIFEST_MAX_BYTES)
        if method == "HEAD":
            answer.close()
        return digest, media_type, body

    def open_blob(self, repository: str, digest: str) -> Answer:
        """A streaming GET of the blob, following (vetted) redirects without credentials."""
        answer = self.request("GET", f"{repository}/blobs/{digest}", repository)
        for _ in range(MAX_REDIRECTS):
            if answer.status not in (301, 302, 303, 307, 308):
                break
            location = urljoin(answer.url + "/", answer.headers.get("location", ""))
            answer.close()
            answer = _send("GET", location, {}, trusted_host="", timeout=TIMEOUT * 2)
            self._raise_for_status(answer, repository)
        if answer.status != 200:
            answer.close()
            raise UpstreamError("invalid", f"{self.base} answered {answer.status} for a blob")
        return answer

    def blob_size(self, repository: str, digest: str) -> Optional[int]:
        """The blob's size from a HEAD; None when the upstream redirects the HEAD (a presigned
        URL is bound to GET, so it is not followed)."""
        answer = self.request("HEAD", f"{repository}/blobs/{digest}", repository)
        answer.close()
        if answer.status != 200:
            return None
        length = answer.headers.get("content-length")
        return int(length) if length and length.isdigit() else None

    def blob_location(self, repository: str, digest: str) -> Optional[str]:
        """A URL a client may fetch the blob from that carries nothing of Berth's credentials:
        where the upstream redirects this (anonymous) client, e.g. Docker Hub's CDN, or the
        upstream's own blob URL when it needed no authorization at all. None otherwise."""
        if self.credentials:
            return None
        answer = self.request("GET", f"{repository}/blobs/{digest}", repository)
        answer.close()
        if answer.status in (302, 303, 307, 308):
            location = urljoin(answer.url + "/", answer.headers.get("location", ""))
            check_url(location, trusted_host="")   # the same rules as for Berth's own requests
            return location
        if answer.status == 200 and not answer.authorized:
            return f"{self.base}/v2/{repository}/blobs/{digest}"
        return None

