"""The repository catalog, sorted, paginated with `n`, `last` and a Link header.

Filtered to what the caller may pull, with bounded work: a page reads at most SCAN_QUERIES
Queries of SCAN_PAGE names (the repositories' own public flags come with them) and the
visibility of at most NAMESPACE_LOOKUPS namespaces (one BatchGet). When that budget runs out
before `n` readable names were found, the page is short and its Link continues after the last
name examined, as the management API's search does: a registry full of private repositories
costs a caller who may see none of them a few reads per request, not two per repository.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Tuple

from chalice import Response

from chalicelib import oci
from chalicelib.api.router import CATALOG, Request, json_response, next_link, page_size, route
from chalicelib.auth import accounts
from chalicelib.storage import stats
from chalicelib.storage.models import NamespaceItem, RepoItem, ns_pk

PAGE_DEFAULT = 1000
PAGE_MAX = 10000
SCAN_PAGE = 1000            # repository names one Query reads
SCAN_QUERIES = 11           # Queries one catalog request may make (n = PAGE_MAX fits)
NAMESPACE_LOOKUPS = 100     # namespaces whose visibility one request may read (one BatchGet)


@route("GET", r"_catalog", "/v2/_catalog", CATALOG)
def catalog(request: Request) -> Response:
    n = page_size(request, PAGE_DEFAULT, PAGE_MAX)
    last = request.arg("last") or None
    names, after = _readable_page(_Viewer.of(request), n, last) if n else ([], None)
    headers = {"Link": next_link("_catalog", n, after)} if after else {}
    return json_response({"repositories": names}, headers=headers)


@dataclass
class _Viewer:
    """What the caller may pull: everything (an admin), or its namespaces and public ones."""
    everything: bool = False
    mine: FrozenSet[str] = frozenset()
    public_namespaces: Dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, request: Request) -> "_Viewer":
        subject = request.grants.subject if request.grants else None
        user = accounts.get_user(subject) if subject else None
        if user is None or user.disabled:
            return cls()
        return cls(everything=bool(user.admin),
                   mine=frozenset(accounts.namespaces_of(subject)))

    def needs_lookup(self, repo: RepoItem) -> Optional[str]:
        namespace = oci.namespace_of(repo.sk)
        if self.everything or repo.public or namespace in self.mine \
                or namespace in self.public_namespaces:
            return None
        return namespace

    def may_pull(self, repo: RepoItem) -> bool:
        namespace = oci.namespace_of(repo.sk)
        return (self.everything or bool(repo.public) or namespace in self.mine
                or self.public_namespaces.get(namespace, False))

    def look_up(self, repos: List[RepoItem]) -> int:
        """Read the visibility of the namespaces `repos` need, within the request's budget;
        returns how many of `repos` (from the start) can now be decided."""
        wanted: List[str] = []
        for index, repo in enumerate(repos):
            namespace = self.needs_lookup(repo)
            if namespace is None or namespace in wanted:
                continue
            if len(self.public_namespaces) + len(wanted) >= NAMESPACE_LOOKUPS:
                self._read(wanted)
                return index
            wanted.append(namespace)
        self._read(wanted)
        return len(repos)

    def _read(self, namespaces: List[str]) -> None:
        if not namespaces:
            return
        found = stats.batch_get(NamespaceItem, [(ns_pk(ns), "ns") for ns in namespaces])
        for ns in namespaces:
            item = found.get((ns_pk(ns), "ns"))
            self.public_namespaces[ns] = bool(item is not None and item.public)


def _readable_page(viewer: _Viewer, n: int, last: Optional[str]) -> Tuple[List[str],
                                                                         Optional[str]]:
    """Up to n repositories the caller may pull, after `last`, and the name the next page
    starts after (None: nothing follows)."""
    found: List[str] = []
    cursor = last
    for _ in range(SCAN_QUERIES):
        want = n + 1 - len(found) if viewer.everything else SCAN_PAGE
        repos, after = stats.repository_page("", min(want, SCAN_PAGE), cursor)
        decidable = viewer.look_up(repos)
        for repo in repos[:decidable]:
            if viewer.may_pull(repo):
                found.append(repo.sk)
                if len(found) > n:
                    return found[:n], found[n - 1]
            cursor = repo.sk
        if decidable < len(repos):
            break              # the namespace lookup budget is spent
        if after is None:
            return found, None
        cursor = after
    return found, cursor
