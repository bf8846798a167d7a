"""Explore: the public repositories of every namespace, searchable, in the management API.

A page reads at most SEARCH_QUERIES Queries of the repository partition (names filtered by the
search string), one GetItem per distinct namespace on it (is the namespace public?), then the
repository statistics of what it returns: bounded work whatever the registry's size; a short
page comes with a cursor to continue.

Official images: the answer's `official` list holds the mirror rules the caller may pull from
(chalicelib/api/manage/mirrors.py lists what each cached, for the console's #/official page).
"""
from __future__ import annotations

from typing import Dict, List, Optional

from chalicelib import oci
from chalicelib.api.manage.core import Caller, cursor_arg, endpoint, limit_arg, search_arg
from chalicelib.api.manage.mirrors import official_rules
from chalicelib.api.manage.repos import (META_SK, PAGE_DEFAULT, PAGE_MAX, SEARCH_QUERIES,
                                         RepoMetaItem, _actions, _namespace_public, meta_pk,
                                         repository_json)
from chalicelib.api.router import Request
from chalicelib.storage import stats
from chalicelib.storage.models import RepoItem


def _public_page(search: Optional[str], limit: int, after: Optional[str]):
    """Public repositories after `after` whose names contain `search`; the name to continue after
    when the read budget ran out first."""
    found: List[RepoItem] = []
    namespace_public: Dict[str, bool] = {}
    start = after
    for _ in range(SEARCH_QUERIES):
        items, start = stats.repository_page("", limit, start, contains=search or None)
        for repo in items:
            ns = oci.namespace_of(repo.sk)
            if ns not in namespace_public:
                namespace_public[ns] = _namespace_public(ns)
            if repo.public or namespace_public[ns]:
                found.append(repo)
                if len(found) == limit:
                    return found, repo.sk, namespace_public
        if start is None:
            return found, None, namespace_public
    return found, start, namespace_public


@endpoint("GET", r"explore", "explore",
          "Public repositories of every namespace (searchable by name) and the official images; "
          "paginated with a cursor", query=["q", "limit", "cursor"])
def explore(request: Request, caller: Caller) -> dict:
    limit = limit_arg(request, PAGE_DEFAULT, PAGE_MAX)
    search = search_arg(request)
    after = cursor_arg(request, oci.is_valid_name)
    found, next_after, namespace_public = _public_page(search, limit, after)
    metas = stats.batch_get(RepoMetaItem, [(meta_pk(r.sk), META_SK) for r in found])
    roles: Dict[str, Optional[str]] = {}
    repositories = []
    for repo in found:
        ns = oci.namespace_of(repo.sk)
        if ns not in roles:
            roles[ns] = caller.role_in(ns)
        repositories.append(repository_json(
            request, repo, metas.get((meta_pk(repo.sk), META_SK)),
            stats.repository_stats(repo.sk), namespace_public[ns], roles[ns],
            _actions(caller, roles[ns], True)))
    return {"repositories": repositories, "official": official_rules(caller),
            "next_cursor": stats.encode_cursor(next_after) if next_after else None}
