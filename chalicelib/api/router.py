"""Routing of /v2/ paths to handlers.

Repository names contain slashes and API Gateway gives the whole rest of the path as one greedy
parameter, so handlers register a regular expression over that path instead of Chalice routes.
Patterns are anchored at the end: `<name>/manifests/<reference>` etc., so names of any depth work.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Pattern, Tuple
from urllib.parse import urlencode

from chalice import Response

from chalicelib import oci
from chalicelib.auth.scopes import Grants
from chalicelib.errors import RegistryError


@dataclass
class Request:
    """What a handler needs from an HTTP request, independent of Chalice."""
    method: str
    path: str                       # after /v2/, e.g. "library/alpine/manifests/latest"
    params: Dict[str, str]          # named groups of the route's pattern
    query: Dict[str, List[str]]
    headers: Dict[str, str]         # lower-case names
    body_reader: Callable[[], bytes] = field(repr=False, default=lambda: b"")
    source_ip: Optional[str] = None
    grants: Optional[Grants] = None  # what the caller's verified token allows

    @property
    def body(self) -> bytes:
        return self.body_reader()

    def arg(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        return values[-1] if values else None

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def name(self) -> str:
        return self.params["name"]


Handler = Callable[[Request], Response]

# What a route needs from the caller's token (see chalicelib/api/access.py).
PUBLIC = "public"        # nothing: the token endpoint itself
SIGNED_IN = "signed-in"  # any valid token: GET /v2/, which `docker login` uses to check a login
CATALOG = "catalog"      # any valid token; the listing is filtered by what the caller may pull
API = "api"              # the management API: its handlers check a `berth:api:*` token themselves


@dataclass(frozen=True)
class Route:
    method: str
    pattern: Pattern[str]
    handler: Handler
    template: str        # names the route in logs (no user data)
    action: str          # pull | push | delete (on the repository in the path), or one of above


_routes: List[Route] = []


def route(method: str, pattern: str, template: str, action: str) -> Callable[[Handler], Handler]:
    """Register a handler for `method` on paths under /v2/ matching `pattern`."""
    # DOTALL and fullmatch: a path with a newline in it must not slip past an anchored pattern
    # ("$" also matches before a final newline) or fall out of a catch-all
    compiled = re.compile(f"^{pattern}$", re.DOTALL)

    def register(handler: Handler) -> Handler:
        _routes.append(Route(method, compiled, handler, template, action))
        return handler
    return register


def resolve(method: str, path: str) -> Tuple[Route, Dict[str, str]]:
    """Find the route of a request, validating the repository name it addresses."""
    matched_path = False
    for candidate in _routes:
        m = candidate.pattern.fullmatch(path)
        if not m:
            continue
        matched_path = True
        if candidate.method != method and not (candidate.method == "GET" and method == "HEAD"):
            continue
        params = m.groupdict()
        if "name" in params:
            oci.check_name(params["name"])
        return candidate, params
    if matched_path:
        raise RegistryError("UNSUPPORTED", f"method {method} is not supported here", status=405)
    raise RegistryError("NAME_UNKNOWN", "no such registry endpoint", status=404,
                        detail={"path": path[:300]})


# ---------------------------------------------------------------- response helpers

def empty(status: int, headers: Optional[Dict[str, str]] = None) -> Response:
    """A response with no body (Content-Length 0), as upload and delete answers are."""
    all_headers = {"Content-Length": "0"}
    all_headers.update(headers or {})
    return Response(body="", status_code=status, headers=all_headers)


def json_response(doc, status: int = 200, headers: Optional[Dict[str, str]] = None,
                  content_type: str = "application/json") -> Response:
    body = json.dumps(doc, separators=(",", ":"))
    all_headers = {"Content-Type": content_type}
    all_headers.update(headers or {})
    return Response(body=body, status_code=status, headers=all_headers)


def error_response(error: RegistryError) -> Response:
    headers = {"Content-Type": "application/json"}
    headers.update(error.headers)
    return Response(body=json.dumps(error.envelope(), separators=(",", ":")),
                    status_code=error.status, headers=headers)


def page_size(request: Request, default: int, maximum: int) -> int:
    raw = request.arg("n")
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer",
                            detail={"n": raw[:50]})
    return min(int(raw), maximum)


def next_link(path: str, n: int, last: str, extra: Optional[Dict[str, str]] = None) -> str:
    """RFC 5988 Link header to the next page."""
    query = {"n": str(n), "last": last}
    query.update(extra or {})
    return f'</v2/{path}?{urlencode(query)}>; rel="next"'
