"""GET /v2/_berth/console/ and its two assets, as text responses.

Text, not binary: a response whose Content-Type is one of the API's binary types needs a matching
Accept header from the client (Chalice, see docs/client-behaviour.md). The pages fetch nothing from anywhere
else (no CDN) and call the management API with a bearer token kept in sessionStorage: no cookies.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from chalice import Response

from chalicelib.api.router import PUBLIC, Request, route

STATIC = Path(__file__).parent / "static"
FILES = {"": ("index.html", "text/html; charset=utf-8"),
         "app.css": ("app.css", "text/css; charset=utf-8"),
         "app.js": ("app.js", "text/javascript; charset=utf-8")}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
}


@lru_cache(maxsize=None)
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


CONSOLE_URL = "/v2/_berth/console/"
# Chalice labels a response without a Content-Type application/json: a redirect says what it is
# and carries a link for whatever does not follow Location.
REDIRECT_PAGE = (f'<!doctype html><title>Moved</title><p>The console is at '
                 f'<a href="{CONSOLE_URL}">{CONSOLE_URL}</a>.</p>\n')


@route("GET", r"_berth/console", "/v2/_berth/console", PUBLIC)
def console_redirect(request: Request) -> Response:
    headers = dict(HEADERS, Location=CONSOLE_URL)
    headers["Content-Type"] = "text/html; charset=utf-8"
    return Response(body=REDIRECT_PAGE, status_code=301, headers=headers)


@route("GET", r"_berth/console/(?P<file>|app\.css|app\.js)", "/v2/_berth/console/{file}", PUBLIC)
def console_file(request: Request) -> Response:
    name, content_type = FILES[request.params["file"]]
    headers = dict(HEADERS)
    headers["Content-Type"] = content_type
    return Response(body=_read(name), status_code=200, headers=headers)
