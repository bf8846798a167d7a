"""Mirror rules and what they cached, in the management API (the console's "Official images").

  GET    mirrors               every rule the caller may pull from, with its cached images
                               (name, tags, size, last fetched from upstream, `docker pull`)
                               and the `registry-mirrors` snippet for /etc/docker/daemon.json
  PUT    mirrors/{namespace}   create or replace a rule (admins)
  DELETE mirrors/{namespace}   remove a rule; what it cached stays until evicted (admins)
"""
from __future__ import annotations

import time
from typing import List, Optional

from chalicelib import oci
from chalicelib.api import access
from chalicelib.api.manage.core import (PULL, Caller, bad, bool_field, endpoint, forbidden,
                                        json_body, not_found, registry_host, text_field)
from chalicelib.api.router import Request, empty
from chalicelib.storage import mirrors, stats
from chalicelib.storage.models import repo_pk

IMAGES_MAX = 50     # cached repositories listed per rule
NAMESPACE = r"mirrors/(?P<namespace>[a-z0-9][a-z0-9._-]*)"


def _cached_image(request: Request, name: str) -> dict:
    """One cached repository: its tags, bytes stored (manifests and blobs), last upstream fetch."""
    tags, size, fetched = [], 0, None
    for row in stats._PartitionRow.query(repo_pk(name), limit=stats.MAX_ITEMS,
                                         attributes_to_get=["pk", "sk", "size", "updated"]):
        if row.sk.startswith("tag#"):
            tags.append(row.sk[4:])
            fetched = max(fetched or 0.0, float(row.updated or 0))
        elif row.sk.startswith(("manifest#", "blob#")):
            size += int(row.size or 0)
    tag = "latest" if "latest" in tags or not tags else tags[0]
    return {"name": name, "tags": tags, "size": size, "last_fetched": fetched,
            "pull_command": f"docker pull {registry_host(request)}/{name}:{tag}"}


def _rule_json(request: Request, rule: mirrors.Rule, caller: Caller) -> dict:
    repos, _ = stats.repository_page(rule.namespace + "/", IMAGES_MAX, None)
    doc = rule.to_dict()
    doc["images"] = [_cached_image(request, r.sk) for r in repos]
    doc["can_edit"] = caller.admin
    if rule.namespace == "library":     # docker's short names (alpine:3) go to library/
        doc["short_names"] = True
    return doc


def _visible(rule: mirrors.Rule, caller: Caller) -> bool:
    return caller.admin or rule.public or PULL in caller.actions_on(rule.namespace + "/x")


def official_rules(caller: Caller) -> List[dict]:
    """The rules the caller may pull from, without their images: Explore's `official` list (the
    console links it to #/official). Rules come from the per-process cache: no Query per page."""
    rules = sorted(mirrors.rules().values(), key=lambda r: r.namespace)
    return [{"namespace": r.namespace, "upstream": r.upstream, "prefix": r.prefix,
             "public": r.public} for r in rules if _visible(r, caller)]


@endpoint("GET", r"mirrors", "mirrors",
          "Mirror rules (pull-through caches) with what each cached, and the docker "
          "registry-mirrors snippet")
def list_mirrors(request: Request, caller: Caller) -> dict:
    rules = [r for r in mirrors.list_rules() if _visible(r, caller)]
    return {"mirrors": [_rule_json(request, r, caller) for r in rules],
            "daemon_json": {"registry-mirrors": [access.base_url(request)]}}


def _ttl(value) -> float:
    if value is None:
        return mirrors.DEFAULT_TAG_TTL
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        from chalicelib.gc import parse_duration
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise bad(str(exc), "tag_ttl") from None
    raise bad("tag_ttl is a duration such as 10m, or seconds", "tag_ttl")


def _credentials(doc: dict) -> Optional[tuple]:
    value = doc.get("credentials")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad("credentials is {\"username\": ..., \"password\": ...}", "credentials")
    username = text_field(value, "username", required=True, max_len=256)
    password = text_field(value, "password", required=True, max_len=4096)
    return username, password


@endpoint("PUT", NAMESPACE, "mirrors/{namespace}",
          "Create or replace the mirror rule of a namespace (admins); credentials are write-only",
          body="MirrorRule")
def put_mirror(request: Request, caller: Caller) -> dict:
    if not caller.admin:
        raise forbidden("only admins manage mirror rules")
    namespace = request.params["namespace"]
    if not oci.is_valid_namespace(namespace):
        raise bad("not a valid namespace", "namespace")
    doc = json_body(request)
    rule = mirrors.add_rule(namespace, text_field(doc, "upstream", required=True),
                            prefix=text_field(doc, "prefix", default="") or "",
                            public=bool(bool_field(doc, "public")),
                            tag_ttl=_ttl(doc.get("tag_ttl")), credentials=_credentials(doc))
    return {"mirror": rule.to_dict(), "updated": time.time()}


@endpoint("DELETE", NAMESPACE, "mirrors/{namespace}", "Remove a mirror rule (admins)",
          status=204)
def delete_mirror(request: Request, caller: Caller):
    if not caller.admin:
        raise forbidden("only admins manage mirror rules")
    if not mirrors.remove_rule(request.params["namespace"]):
        raise not_found("no mirror rule for this namespace", "namespace")
    return empty(204)
