"""The repository catalog, sorted, paginated with `n`, `last` and a Link header."""
from __future__ import annotations

from chalice import Response

from chalicelib.api.router import Request, json_response, next_link, page_size, route
from chalicelib.storage import metadata

PAGE_DEFAULT = 1000
PAGE_MAX = 10000


@route("GET", r"_catalog", "/v2/_catalog")
def catalog(request: Request) -> Response:
    n = page_size(request, PAGE_DEFAULT, PAGE_MAX)
    last = request.arg("last") or None
    names, more = metadata.list_repositories(n, last) if n else ([], False)
    headers = {"Link": next_link("_catalog", n, names[-1])} if more else {}
    return json_response({"repositories": names}, headers=headers)
