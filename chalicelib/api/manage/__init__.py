"""The management API (/v2/_berth/api/…) and the web console (/v2/_berth/console/).

Importing this package registers the routes, most specific first, then a catch-all that answers
anything else under /v2/_berth/api/ in the API's own error shape.
"""
from __future__ import annotations

from chalicelib.api.manage import repos, people, session, explore, mirrors, openapi  # noqa: F401,E501
from chalicelib.api.manage.core import ApiError, PREFIX
from chalicelib.api.router import API, Request, route
from chalicelib.console import serve as console  # noqa: F401  (registers the console's routes)

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _unknown(request: Request):
    known = [r for r in _api_routes() if r.pattern.fullmatch(request.path)]
    if known:
        return ApiError(405, "METHOD_NOT_ALLOWED",
                        f"{request.method} is not supported here; use "
                        f"{', '.join(sorted({r.method for r in known}))}").response()
    return ApiError(404, "NOT_FOUND", "no such management API endpoint").response()


def _api_routes():
    from chalicelib.api import router
    return [r for r in router._routes if r.template.startswith("/v2/_berth/api/")
            and r.handler is not _unknown]


for _method in _METHODS:
    route(_method, PREFIX + r".*", "/v2/_berth/api/?", API)(_unknown)
route("GET", r"_berth/api", "/v2/_berth/api/?", API)(_unknown)
