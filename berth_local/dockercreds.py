"""The credentials docker already stores for a registry, and a token client that uses them.

`berth proxy` is pushed to as `127.0.0.1:5001/<name>`, and docker keys its logins by the host in
the image reference: without this module a user would need a second `docker login` for the
proxy's address. Instead the proxy authenticates to the upstream by itself, as skopeo and crane
do with the same files:

* Where the credentials are (`find_credentials`): `$DOCKER_CONFIG/config.json`, else
  `~/.docker/config.json`. A credential helper named for the host (`credHelpers[host]`) wins, then
  the default store (`credsStore`), then the file's own `auths` entry (base64 `auth`, or
  `username`/`password`, or `identitytoken`), whose key may carry a scheme and a path
  (`https://host/v1/`), as older docker versions wrote them. A helper is the program
  `docker-credential-<name>`, run as `get` with the host on stdin, answering JSON
  `{"Username", "Secret"}`; the user name `<token>` marks the secret as an identity token.
* How they are used (`RegistryAuth`): the upstream's challenge (the 401 of `GET /v2/`) names a
  Bearer realm and service, or Basic. For Bearer, the realm is asked for a token with the scope
  the request needs (`scopes_for`), with basic auth (`GET`, as docker does), or with the identity
  token as an OAuth2 refresh token (`POST grant_type=refresh_token`, as docker does); tokens are
  cached per scope until shortly before they expire. For Basic, the credentials are sent as they
  are. Lookups happen when a token is needed, so a `docker login` after the proxy started counts;
  a `docker logout` takes effect when the cached tokens expire (Berth's live 300 s).

Security: credentials go to one place only, the realm the upstream's own challenge names (as
with docker itself), never to a plain-http realm when the upstream is https, and redirects of
the token request are not followed. They are never logged: `Credentials` hides its secret from
repr, and errors name the host, never a header. Whoever can reach the proxy can push as the user
(hence it listens on 127.0.0.1 by default, like docker's own credential store, which any local
process of the user can read).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.utils import parse_dict_header

log = logging.getLogger("berth_local.proxy")   # shown with the proxy's own messages

IDENTITY_TOKEN_USER = "<token>"       # docker's marker: the secret is a refresh token
HELPER_TIMEOUT = 30.0
TOKEN_TIMEOUT = 30.0
DEFAULT_EXPIRES_IN = 60               # the token spec's default when the realm gives none
CLIENT_ID = "berth-proxy"
RETRY_SECONDS = 10.0                  # after finding no credentials or a refused token request

# The registry API's paths under a repository, anchored at the end (names may hold "blobs" too).
_REPOSITORY_PATH = re.compile(r"^/v2/(?P<name>.+)/(?:(?P<upload>blobs/uploads/[^/]*)|blobs/[^/]+"
                              r"|manifests/[^/]+|tags/list|referrers/[^/]+)$")


class CredentialsError(Exception):
    """docker's configuration or a credential helper could not be read (the message says why)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    secret: str = field(repr=False)
    identity_token: bool = False      # `secret` is an OAuth2 refresh token, not a password


# --------------------------------------------------------------------------------------------
# Where docker keeps them
# --------------------------------------------------------------------------------------------


def docker_config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """`$DOCKER_CONFIG`, else `~/.docker`, as the docker CLI decides."""
    configured = environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def registry_hostname(key: str) -> str:
    """docker's ConvertToHostname: `https://host:5000/v1/` -> `host:5000`."""
    text = key.strip()
    for prefix in ("http://", "https://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    return text.split("/", 1)[0].lower()


def find_credentials(host: str, config_dir: Optional[Path] = None) -> Optional[Credentials]:
    """The credentials docker stores for `host` (`name` or `name:port`), or None.

    Raises CredentialsError when config.json is unreadable or a helper fails otherwise than
    with "not found"."""
    path = (config_dir or docker_config_dir()) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path} is not a JSON object")
    wanted = host.lower()
    helpers = config.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if registry_hostname(key) == wanted), None)
    if helper:
        return credentials_from_helper(helper, host)
    if config.get("credsStore"):
        found = credentials_from_helper(config["credsStore"], host)
        if found is not None:
            return found
    return _from_auths(config.get("auths") or {}, wanted, path)


def _from_auths(auths: Mapping[str, object], host: str, path: Path) -> Optional[Credentials]:
    for key, entry in auths.items():
        if registry_hostname(key) != host or not isinstance(entry, dict):
            continue
        user, secret = _decode_auth(entry["auth"], key, path) if entry.get("auth") else \
            (entry.get("username") or "", entry.get("password") or "")
        if entry.get("identitytoken"):
            return Credentials(user or IDENTITY_TOKEN_USER, entry["identitytoken"], True)
        if user and secret:
            return Credentials(user, secret)
    return None


def _decode_auth(value: str, key: str, path: Path) -> tuple[str, str]:
    """config.json's `auth`: base64 of `user:password`."""
    try:
        user, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sep = ""
    if not sep:
        raise CredentialsError(f"{path}: the `auth` of {key!r} is not base64 of user:password")
    return user, secret


def credentials_from_helper(helper: str, host: str) -> Optional[Credentials]:
    """Ask `docker-credential-<helper> get` for `host`; None when it has nothing for it."""
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=host.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT)
    except FileNotFoundError:
        raise CredentialsError(f"docker's config names the credential helper {helper!r}, "
                               f"but {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"{program} get did not answer in {HELPER_TIMEOUT:.0f} s") from None
    output = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        if "not found" in output.lower():    # the helpers' "credentials not found in native keychain"
            return None
        # a helper's output on failure is its own error message, never the secret
        raise CredentialsError(f"{program} get failed ({done.returncode}): {output[:200]}")
    try:
        answer = json.loads(output)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{program} get did not answer JSON with Username and Secret") from None
    if not secret:
        return None
    return Credentials(username, secret, identity_token=username == IDENTITY_TOKEN_USER)


# --------------------------------------------------------------------------------------------
# Scopes and challenges
# --------------------------------------------------------------------------------------------


def scopes_for(method: str, path: str, query: str = "") -> tuple[str, ...]:
    """The token scopes a request needs, and no more, as registries check them: pull,push for
    anything on an upload session, pull for reading a manifest, blob, tag list or referrers,
    delete for deleting one, pull,push for pushing a manifest; plus pull on the source of a
    cross-repository mount (`?mount=<digest>&from=<name>`); none for `/v2/` and the catalog."""
    match = _REPOSITORY_PATH.match(path)
    if match is None:
        return ()
    verb = method.upper()
    if match.group("upload"):
        actions = "pull,push"
    else:
        actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(verb, "pull,push")
    scopes = [f"repository:{match.group('name')}:{actions}"]
    params = dict(parse_qsl(query))
    if params.get("mount") and params.get("from"):
        scopes.append(f"repository:{params['from']}:pull")
    return tuple(scopes)


@dataclass(frozen=True)
class Challenge:
    scheme: str                       # "bearer" or "basic"
    realm: str = ""
    service: str = ""


def parse_challenge(value: Optional[str]) -> Optional[Challenge]:
    """`Bearer realm="...",service="..."` or `Basic realm="..."` -> Challenge (None if neither)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    params = parse_dict_header(rest)
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    return Challenge(scheme, params.get("realm") or "", params.get("service") or "")


# --------------------------------------------------------------------------------------------
# The token client
# --------------------------------------------------------------------------------------------


class ScopedAuth:
    """The Authorization for one request's scopes: `header()` before sending, `refresh()` after
    the upstream refused it (the next `header()` gets a new token)."""

    def __init__(self, auth: "RegistryAuth", scopes: tuple[str, ...]) -> None:
        self._auth = auth
        self.scopes = scopes

    def header(self) -> Optional[str]:
        return self._auth.authorization(self.scopes)

    def refresh(self) -> None:
        self._auth.forget(self.scopes)


class RegistryAuth:
    """Authorization header values for one upstream registry, from docker's stored credentials.

    `lookup` finds the credentials (default: docker's configuration for the upstream's host);
    `verify` is passed to requests for an https realm (a CA bundle path, or True)."""

    def __init__(self, upstream_url: str, host: str,
                 lookup: Optional[Callable[[], Optional[Credentials]]] = None,
                 verify: "bool | str" = True) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.host = host
        self._lookup = lookup or (lambda: find_credentials(host))
        self._verify = verify
        self._session = requests.Session()
        self._challenge: Optional[Challenge] = None
        self._challenge_known = False
        self._tokens: dict[tuple[str, ...], tuple[Optional[str], float]] = {}  # scopes -> (header, renew at)
        self._lock = threading.Lock()           # the token cache
        self._fetch_lock = threading.Lock()     # one token request at a time (concurrent layers)
        self._warned: set[str] = set()

    def for_scopes(self, scopes: tuple[str, ...]) -> ScopedAuth:
        return ScopedAuth(self, scopes)

    def stored_credentials(self) -> Optional[Credentials]:
        """What docker stores for the upstream now (None, with a warning, when unreadable)."""
        try:
            return self._lookup()
        except CredentialsError as exc:
            self._warn_once(str(exc))
            return None

    def authorization(self, scopes: tuple[str, ...]) -> Optional[str]:
        """The Authorization header value for a request needing `scopes`, or None (then the
        request goes without, and the upstream's own 401 reaches the client)."""
        hit, value = self._cached(scopes)
        if hit:
            return value
        with self._fetch_lock:
            hit, value = self._cached(scopes)    # another thread may have fetched it meanwhile
            if hit:
                return value
            value, lifetime = self._fresh_authorization(scopes)
            # no credentials or a refusal: not asked again for a few seconds (one warning, not one
            # token request and helper run per forwarded request)
            renew_at = time.monotonic() + (_renew_after(lifetime) if value else RETRY_SECONDS)
            with self._lock:
                self._tokens[scopes] = (value, renew_at)
            return value

    def _fresh_authorization(self, scopes: tuple[str, ...]) -> tuple[Optional[str], float]:
        challenge = self._upstream_challenge()
        if challenge is None:
            return None, 0
        credentials = self.stored_credentials()
        if credentials is None:
            return None, 0
        return self._authorize(challenge, credentials, scopes)

    def forget(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)

    def close(self) -> None:
        self._session.close()

    # -- internals -----------------------------------------------------------------------------

    def _cached(self, scopes: tuple[str, ...]) -> tuple[bool, Optional[str]]:
        """(whether the cache answers, its value: a header, or None for "none to send")."""
        with self._lock:
            entry = self._tokens.get(scopes)
        if entry is not None and time.monotonic() < entry[1]:
            return True, entry[0]
        return False, None

    def _upstream_challenge(self) -> Optional[Challenge]:
        """The upstream's challenge, learnt once from the 401 of `GET /v2/` (None: no auth)."""
        if self._challenge_known:
            return self._challenge
        try:
            probe = self._session.get(f"{self.upstream_url}/v2/", timeout=TOKEN_TIMEOUT,
                                      allow_redirects=False, verify=self._verify)
        except requests.RequestException as exc:
            log.warning("cannot reach %s/v2/ to learn how it authenticates: %s", self.upstream_url, exc)
            return None
        challenge = None
        if probe.status_code == 401:
            challenge = parse_challenge(probe.headers.get("WWW-Authenticate"))
        if probe.status_code == 401 and challenge is None:
            self._warn_once(f"{self.upstream_url} asks for an authentication scheme the proxy does not "
                            "speak; requests are forwarded without credentials")
        self._challenge, self._challenge_known = challenge, True
        return challenge

    def _authorize(self, challenge: Challenge, credentials: Credentials,
                   scopes: tuple[str, ...]) -> tuple[Optional[str], float]:
        if challenge.scheme == "basic":
            if credentials.identity_token:
                self._warn_once(f"{self.host} asks for basic auth, but docker stores an identity "
                                "token for it: run `docker login` again")
                return None, 0
            pair = f"{credentials.username}:{credentials.secret}".encode()
            return "Basic " + base64.b64encode(pair).decode(), float("inf")
        problem = self._realm_problem(challenge.realm)
        if problem:
            self._warn_once(problem)
            return None, 0
        started = time.monotonic()
        try:
            answer = self._token_request(challenge, credentials, scopes)
        except requests.RequestException as exc:
            log.warning("token request to %s failed: %s", _origin(challenge.realm), exc)
            return None, 0
        if answer.status_code in (401, 403):
            self._warn_once(f"the token service of {self.host} refused the credentials docker stores "
                            f"for it (user {credentials.username!r}): run `docker login {self.host}`")
            return None, 0
        try:
            payload = answer.json()
            token = payload.get("token") or payload.get("access_token")
            expires_in = float(payload.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (ValueError, TypeError, AttributeError):
            token, expires_in = None, 0.0
        if answer.status_code != 200 or not token:
            log.warning("token request to %s answered %d without a token", _origin(challenge.realm),
                        answer.status_code)
            return None, 0
        return f"Bearer {token}", expires_in - (time.monotonic() - started)

    def _token_request(self, challenge: Challenge, credentials: Credentials,
                       scopes: tuple[str, ...]) -> requests.Response:
        common = dict(timeout=TOKEN_TIMEOUT, allow_redirects=False, verify=self._verify)
        if credentials.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": credentials.secret,
                    "client_id": CLIENT_ID, "service": challenge.service, "scope": " ".join(scopes)}
            return self._session.post(challenge.realm, data=form, **common)
        params = [("service", challenge.service)] + [("scope", s) for s in scopes]
        return self._session.get(challenge.realm, params=params,
                                 auth=(credentials.username, credentials.secret), **common)

    def _realm_problem(self, realm: str) -> Optional[str]:
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"the token realm {realm[:200]!r} of {self.host} is not an http(s) URL"
        if parts.scheme == "http" and self.upstream_url.startswith("https:"):
            return (f"{self.host} names a plain-http token realm ({_origin(realm)}): the proxy does "
                    "not send docker's credentials there")
        return None

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)


def _renew_after(lifetime: float) -> float:
    """Seconds a token is reused: until shortly before it expires (a tenth of its life, at most
    30 s, earlier), so that a request never leaves with a token about to lapse."""
    return max(lifetime - min(30.0, lifetime / 10), 0.0)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
