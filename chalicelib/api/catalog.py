"""The repository catalog, sorted, paginated with `n`, `last` and a Link header."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from chalice import Response

from chalicelib.api.router import CATALOG, Request, json_response, next_link, page_size, route
from chalicelib import oci
from chalicelib.auth import accounts
from chalicelib.storage import metadata

PAGE_DEFAULT = 1000
PAGE_MAX = 10000


@route("GET", r"_catalog", "/v2/_catalog", CATALOG)
def catalog(request: Request) -> Response:
    n = page_size(request, PAGE_DEFAULT, PAGE_MAX)
    last = request.arg("last") or None
    names, more = _readable_page(request, n, last) if n else ([], False)
    headers = {"Link": next_link("_catalog", n, names[-1])} if more else {}
    return json_response({"repositories": names}, headers=headers)


def _readable_filter(request: Request) -> Callable[[str], bool]:
    """Whether the caller may pull a repository: admin, member of its namespace, or public."""
    subject = request.grants.subject if request.grants else None
    user = accounts.get_user(subject) if subject else None
    if user is not None and user.admin and not user.disabled:
        return lambda name: True
    mine = set(accounts.namespaces_of(subject)) if user is not None else set()
    return lambda name: oci.namespace_of(name) in mine or accounts.is_public(name)


def _readable_page(request: Request, n: int, last: Optional[str]) -> Tuple[List[str], bool]:
    """Up to n repositories the caller may pull, after `last`, and whether more follow."""
    readable = _readable_filter(request)
    found: List[str] = []
    cursor, more = last, True
    while more and len(found) <= n:
        names, more = metadata.list_repositories(n, cursor)
        found += [name for name in names if readable(name)]
        cursor = names[-1] if names else cursor
    return found[:n], len(found) > n or more
