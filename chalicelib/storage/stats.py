"""Read-only queries for the management API: repository pages, sizes and tag counts.

Everything is computed from the registry's own items (models.py), so it stays right whatever
wrote them (a push, a re-tag or a delete through the registry API, or the console):

  - a page of repositories is one Query of `_repos` (begins_with `<namespace>/`, Limit = page
    size): the number of reads does not depend on how many repositories a namespace has;
  - the statistics of one repository are one Query of its partition `repo#<name>`, projected to a
    few small attributes (no manifest bodies), bounded to MAX_ITEMS items: tags (count, newest
    push), manifests (their sizes and the blobs they reference) and blob links (their sizes). The
    size is the manifests plus the distinct blobs they reference: blobs nothing references any
    more (a deleted image, an abandoned upload) are garbage awaiting the GC sweep, not counted.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.storage.models import REPOS_PK, RepoItem, _Base, repo_pk

MAX_ITEMS = 5000      # items of one repository partition read for its statistics


class _PartitionRow(_Base):
    """Any item of a repository partition, seen through the few attributes statistics need."""
    size = NumberAttribute(null=True)
    updated = NumberAttribute(null=True)
    pushed = NumberAttribute(null=True)
    created = NumberAttribute(null=True)
    digest = UnicodeAttribute(null=True)
    blobs = ListAttribute(of=UnicodeAttribute, null=True)


_ROW_ATTRIBUTES = ["pk", "sk", "size", "updated", "pushed", "created", "digest", "blobs"]


@dataclass
class RepoStats:
    tags: int = 0
    manifests: int = 0
    size: int = 0
    last_push: Optional[float] = None
    newest_tag: Optional[str] = None
    complete: bool = True      # False: the partition had more than MAX_ITEMS items (lower bounds)

    def to_json(self) -> dict:
        return {"tag_count": self.tags, "manifest_count": self.manifests, "size": self.size,
                "last_push": self.last_push, "stats_complete": self.complete}


def repository_stats(name: str, max_items: int = MAX_ITEMS) -> RepoStats:
    stats = RepoStats()
    links: Dict[str, int] = {}
    referenced: Set[str] = set()
    newest = -1.0
    seen = 0
    for row in _PartitionRow.query(repo_pk(name), limit=max_items + 1,
                                   attributes_to_get=_ROW_ATTRIBUTES):
        seen += 1
        if seen > max_items:
            stats.complete = False
            break
        sk = row.sk
        if sk.startswith("tag#"):
            stats.tags += 1
            when = float(row.updated or 0)
            if when > newest:
                newest, stats.newest_tag = when, sk[4:]
        elif sk.startswith("manifest#"):
            stats.manifests += 1
            stats.size += int(row.size or 0)
            referenced.update(row.blobs or [])
            when = row.pushed if row.pushed is not None else row.created
            if when is not None:
                stats.last_push = max(stats.last_push or 0.0, float(when))
        elif sk.startswith("blob#"):
            links[sk[5:]] = int(row.size or 0)
    stats.size += sum(links[d] for d in referenced if d in links)
    if newest > 0:
        stats.last_push = max(stats.last_push or 0.0, newest)
    return stats


# ---------------------------------------------------------------- repository pages

def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Optional[str]:
    """The repository name a cursor continues after; None if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def repository_page(prefix: str, limit: int, after: Optional[str],
                    contains: Optional[str] = None,
                    max_queries: int = 1) -> Tuple[List[RepoItem], Optional[str]]:
    """Repositories whose names start with `prefix` (e.g. "alice/"), after `after`, whose names
    contain `contains`: at most `limit` of them, from at most `max_queries` Queries of Limit
    `limit` each (a filter can leave a page short); and the name to continue after, if any."""
    conn = RepoItem._get_connection()
    found: List[RepoItem] = []
    start = after
    for _ in range(max_queries):
        condition = RepoItem.sk.startswith(prefix) if prefix else None
        filter_condition = RepoItem.sk.contains(contains) if contains else None
        answer = conn.query(
            REPOS_PK, range_key_condition=condition, filter_condition=filter_condition,
            exclusive_start_key={"pk": {"S": REPOS_PK}, "sk": {"S": start}} if start else None,
            limit=limit - len(found))
        found += [RepoItem.from_raw_data(raw) for raw in answer.get("Items", [])]
        last = answer.get("LastEvaluatedKey")
        if not last:
            return found, None
        start = last["sk"]["S"]
        if len(found) >= limit:
            break
    return found, start


def batch_get(model, keys: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], object]:
    """Items of `model` by (pk, sk), in BatchGetItem calls of up to 100 keys."""
    found = {}
    for item in model.batch_get(list(keys)):
        found[(item.pk, item.sk)] = item
    return found
