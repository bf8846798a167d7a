"""Tag listing, sorted lexically, paginated with `n`, `last` and a Link header."""
from __future__ import annotations

from chalice import Response

from chalicelib.api.router import Request, json_response, next_link, page_size, route
from chalicelib.auth.scopes import PULL
from chalicelib.errors import RegistryError
from chalicelib.storage import metadata

PAGE_DEFAULT = 1000
PAGE_MAX = 10000


@route("GET", r"(?P<name>.+)/tags/list", "/v2/{name}/tags/list", PULL)
def list_tags(request: Request) -> Response:
    n = page_size(request, PAGE_DEFAULT, PAGE_MAX)
    last = request.arg("last") or None
    tags, more = metadata.list_tags(request.name, n, last) if n else ([], False)
    if not tags and not metadata.repo_has_content(request.name):
        raise RegistryError("NAME_UNKNOWN", detail={"name": request.name})
    headers = {"Link": next_link(f"{request.name}/tags/list", n, tags[-1])} if more else {}
    return json_response({"name": request.name, "tags": tags}, headers=headers)
