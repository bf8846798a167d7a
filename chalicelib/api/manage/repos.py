"""Repositories (images) and their tags in the management API.

Descriptions live in an item type of their own, `repometa#<name>` / `meta` (RepoMetaItem below);
everything else is the registry's own items, so what the console shows is what the registry
serves. A repository exists once its RepoItem does (`_repos` / `<name>`): written by the first
push, or by POST /repositories before any push.
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import oci
from chalicelib.api.manage.core import (DELETE, PULL, PUSH, Caller, ApiError, bad, conflict,
                                        cursor_arg, endpoint, forbidden, json_body, limit_arg,
                                        not_found, registry_host, search_arg, text_field)
from chalicelib.api.router import Request
from chalicelib.auth import accounts
from chalicelib.storage import metadata, stats
from chalicelib.storage.models import (REPOS_PK, ManifestItem, RepoItem, TagItem, _Base,
                                       manifest_sk, repo_pk)

DESCRIPTION_MAX = 1000
PAGE_DEFAULT, PAGE_MAX = 20, 100
TAGS_DEFAULT, TAGS_MAX = 50, 100
SEARCH_QUERIES = 5          # Queries of Limit = page size one search page may take, at most
DELETE_BUDGET = 20.0        # seconds one DELETE of a repository works before answering 202
VISIBILITIES = ("private", "public")
# A repository name in a path: components never start with "_", so ".../_tags" is unambiguous.
REPO = r"repositories/(?P<repo>[a-z0-9](?:[a-z0-9._-]|/(?=[a-z0-9]))*)"


class RepoMetaItem(_Base):
    """pk repometa#<repository>, sk meta: what the console adds to a repository."""
    description = UnicodeAttribute(null=True)
    updated = NumberAttribute(null=True)
    updated_by = UnicodeAttribute(null=True)


META_SK = "meta"


def meta_pk(repository: str) -> str:
    return f"repometa#{repository}"


# ---------------------------------------------------------------- helpers

def _check_repo_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not oci.is_valid_name(name) or "/" not in name:
        raise bad("a repository name is <namespace>/<name>: lowercase letters and digits, "
                  "separated by '.', '_', '__', '-' or '/', at most 255 characters", field,
                  code="NAME_INVALID")
    return name


def _get_repo(name: str, consistent: bool = False) -> Optional[RepoItem]:
    try:
        return RepoItem.get(REPOS_PK, name, consistent_read=consistent)
    except DoesNotExist:
        return None


def _get_meta(name: str) -> Optional[RepoMetaItem]:
    try:
        return RepoMetaItem.get(meta_pk(name), META_SK)
    except DoesNotExist:
        return None


def _readable_repo(request: Request, caller: Caller) -> Tuple[str, RepoItem, frozenset]:
    """The repository of the path, if it exists and the caller may pull it (404 otherwise: a
    private repository of someone else is not revealed)."""
    name = _check_repo_name(request.params["repo"], "repository")
    actions = caller.actions_on(name)
    repo = _get_repo(name) if PULL in actions else None
    if repo is None:
        raise not_found(f"no repository {name!r} (or you may not see it)", "repository")
    return name, repo, actions


def _namespace_public(namespace: str) -> bool:
    item = accounts.get_namespace(namespace)
    return bool(item and item.public)


def _pull_command(request: Request, name: str, tag: Optional[str]) -> str:
    return f"docker pull {registry_host(request)}/{name}:{tag or 'latest'}"


def _actions(caller: Caller, role: Optional[str], public: bool) -> frozenset:
    if caller.admin:
        return accounts.ROLES["owner"]
    actions = accounts.ROLES.get(role or "", frozenset())
    return actions | {PULL} if public else actions


def repository_json(request: Request, repo: RepoItem, meta: Optional[RepoMetaItem],
                    repo_stats: stats.RepoStats, namespace_public: bool,
                    role: Optional[str], actions: frozenset) -> dict:
    name = repo.sk
    doc = {"name": name, "namespace": oci.namespace_of(name),
           "description": (meta.description if meta else None) or "",
           "visibility": "public" if repo.public else "private",
           "namespace_public": namespace_public,
           "created": float(repo.created) if repo.created is not None else None,
           "pull_command": _pull_command(request, name, repo_stats.newest_tag),
           "latest_tag": repo_stats.newest_tag,
           "role": role,
           "permissions": sorted(actions),
           "can_edit": PUSH in actions and role is not None,
           "can_delete": DELETE in actions,
           "can_change_visibility": role in ("owner", "admin")}
    doc.update(repo_stats.to_json())
    return doc


# ---------------------------------------------------------------- list and create

@endpoint("GET", r"repositories", "repositories",
          "List repositories of a namespace (or of all yours), with description, tag count, "
          "size, last push and pull command; paginated with a cursor",
          query=["namespace", "q", "limit", "cursor"])
def list_repositories(request: Request, caller: Caller) -> dict:
    limit = limit_arg(request, PAGE_DEFAULT, PAGE_MAX)
    search = search_arg(request)
    namespace = request.arg("namespace") or None
    after = cursor_arg(request, oci.is_valid_name)
    if namespace is not None:
        if not oci.is_valid_namespace(namespace):
            raise bad(f"invalid namespace {namespace[:100]!r}", "namespace")
        if not caller.admin and caller.role_in(namespace) is None and not _namespace_public(
                namespace):
            if accounts.get_namespace(namespace) is None:
                raise not_found(f"no namespace {namespace!r}", "namespace")
            raise forbidden(f"you are not a member of namespace {namespace!r}", "namespace")
        namespaces = [namespace]
    elif caller.admin:
        namespaces = [""]      # every repository
    else:
        namespaces = sorted(accounts.namespaces_of(caller.username))
    if after is not None and namespaces != [""]:
        current = oci.namespace_of(after)
        if current not in namespaces:
            raise bad("this cursor is not one this API returned", "cursor")
        namespaces = namespaces[namespaces.index(current):]
    found: List[RepoItem] = []
    next_after: Optional[str] = None
    queries = SEARCH_QUERIES if search else 1
    for index, ns in enumerate(namespaces):
        prefix = f"{ns}/" if ns else ""
        start = after if after is not None and (not ns or after.startswith(prefix)) else None
        items, next_after = stats.repository_page(prefix, limit - len(found), start,
                                                  contains=search or None, max_queries=queries)
        found += items
        if next_after is not None:
            break
        if len(found) >= limit and index + 1 < len(namespaces):
            next_after = found[-1].sk     # the next namespace starts after this one
            break
    metas = stats.batch_get(RepoMetaItem, [(meta_pk(r.sk), META_SK) for r in found])
    per_namespace: Dict[str, Tuple[bool, Optional[str]]] = {}   # public, caller's role
    repositories = []
    for repo in found:
        ns = oci.namespace_of(repo.sk)
        if ns not in per_namespace:
            per_namespace[ns] = (_namespace_public(ns), caller.role_in(ns))
        ns_public, role = per_namespace[ns]
        repositories.append(repository_json(
            request, repo, metas.get((meta_pk(repo.sk), META_SK)),
            stats.repository_stats(repo.sk), ns_public, role,
            _actions(caller, role, ns_public or bool(repo.public))))
    return {"repositories": repositories,
            "next_cursor": stats.encode_cursor(next_after) if next_after else None}


def _visibility(doc: dict, default: Optional[str]) -> Optional[str]:
    value = doc.get("visibility", default)
    if value is not None and value not in VISIBILITIES:
        raise bad("visibility is private or public", "visibility")
    return value


@endpoint("POST", r"repositories", "repositories",
          "Create a repository before its first push: name, description, visibility",
          body="RepositoryCreate", status=201)
def create_repository(request: Request, caller: Caller) -> dict:
    doc = json_body(request)
    name = _check_repo_name(text_field(doc, "name", required=True, max_len=oci.NAME_MAX + 1))
    description = text_field(doc, "description", max_len=DESCRIPTION_MAX, default="")
    visibility = _visibility(doc, "private")
    namespace = oci.namespace_of(name)
    if accounts.get_namespace(namespace) is None:
        raise bad(f"there is no namespace {namespace!r}: activate it first", "name",
                  code="NAMESPACE_UNKNOWN")
    if PUSH not in caller.actions_on(name):
        raise forbidden(f"you may not create repositories in namespace {namespace!r}", "name")
    if visibility == "public" and caller.role_in(namespace) not in ("owner", "admin"):
        raise forbidden("only an owner of the namespace may make a repository public",
                        "visibility")
    now = time.time()
    repo = RepoItem(REPOS_PK, name, created=now, updated=now, public=visibility == "public")
    try:
        with TransactWrite(connection=metadata.connection()) as tx:
            tx.save(repo, condition=RepoItem.sk.does_not_exist())
            tx.save(RepoMetaItem(meta_pk(name), META_SK, description=description, updated=now,
                                 updated_by=caller.username))
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in str(getattr(exc, "cancellation_reasons", None) or exc):
            raise conflict(f"repository {name!r} already exists", "name",
                           code="ALREADY_EXISTS") from None
        raise
    meta = RepoMetaItem(meta_pk(name), META_SK, description=description)
    ns_public, role = _namespace_public(namespace), caller.role_in(namespace)
    return repository_json(request, repo, meta, stats.RepoStats(), ns_public, role,
                           _actions(caller, role, ns_public or bool(repo.public)))


# ---------------------------------------------------------------- one repository

@endpoint("GET", REPO, "repositories/{repository}", "Read one repository")
def read_repository(request: Request, caller: Caller) -> dict:
    name, repo, actions = _readable_repo(request, caller)
    namespace = oci.namespace_of(name)
    return repository_json(request, repo, _get_meta(name), stats.repository_stats(name),
                           _namespace_public(namespace), caller.role_in(namespace), actions)


@endpoint("PATCH", REPO, "repositories/{repository}",
          "Change the description and/or the visibility of a repository",
          body="RepositoryUpdate")
def update_repository(request: Request, caller: Caller) -> dict:
    name, repo, actions = _readable_repo(request, caller)
    doc = json_body(request)
    description = text_field(doc, "description", max_len=DESCRIPTION_MAX)
    visibility = _visibility(doc, None)
    if description is None and visibility is None:
        raise bad("give a description or a visibility to change", "description")
    role = caller.role_in(oci.namespace_of(name))
    if description is not None and (PUSH not in actions or role is None):
        raise forbidden("you may not edit this repository", "description")
    if visibility is not None and role not in ("owner", "admin"):
        raise forbidden("only an owner of the namespace may change the visibility",
                        "visibility")
    now = time.time()
    if description is not None:
        RepoMetaItem(meta_pk(name), META_SK, description=description, updated=now,
                     updated_by=caller.username).save()
    if visibility is not None:
        accounts.set_repository_public(name, visibility == "public")
    return read_repository(request, caller)


@endpoint("DELETE", REPO, "repositories/{repository}",
          "Delete an image: every tag and manifest of the repository, and the repository "
          "(its blobs are left to the garbage collection sweep). 202 when it must be called "
          "again to finish")
def delete_repository(request: Request, caller: Caller):
    name, repo, actions = _readable_repo(request, caller)
    if DELETE not in actions:
        raise forbidden(f"you may not delete {name!r}", "repository")
    started = time.monotonic()
    repo = _get_repo(name, consistent=True) or repo
    seen_updated = repo.updated
    deleted_manifests, deleted_tags = 0, []
    for tag in TagItem.query(repo_pk(name), TagItem.sk.startswith("tag#"),
                             attributes_to_get=["pk", "sk"]):
        deleted_tags.append(tag.sk[4:])
    while True:
        digests = [m.sk[len("manifest#"):] for m in ManifestItem.query(
            repo_pk(name), ManifestItem.sk.startswith("manifest#"), limit=100,
            attributes_to_get=["pk", "sk"], consistent_read=True)]
        if not digests:
            break
        for digest in digests:
            if metadata.delete_manifest(name, digest):
                deleted_manifests += 1
            if time.monotonic() - started > DELETE_BUDGET:
                return _delete_answer(name, deleted_tags, deleted_manifests, complete=False)
    for tag in TagItem.query(repo_pk(name), TagItem.sk.startswith("tag#"),
                             attributes_to_get=["pk", "sk"], consistent_read=True):
        metadata.delete_tag(name, tag.sk[4:])      # a tag of a manifest that was not there
    try:
        with TransactWrite(connection=metadata.connection()) as tx:
            tx.delete(RepoItem(REPOS_PK, name), condition=RepoItem.updated == seen_updated)
            tx.delete(RepoMetaItem(meta_pk(name), META_SK))
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in str(getattr(exc, "cancellation_reasons", None) or exc):
            raise conflict(f"{name!r} was pushed to while it was being deleted: what was "
                           "pushed stays", "repository") from None
        raise
    return _delete_answer(name, deleted_tags, deleted_manifests, complete=True)


def _delete_answer(name: str, tags: List[str], manifests: int, complete: bool):
    from chalicelib.api.manage.core import reply
    return reply({"repository": name, "deleted_tags": sorted(tags),
                  "deleted_manifests": manifests, "complete": complete},
                 200 if complete else 202)


# ---------------------------------------------------------------- tags

def _platforms(index_doc: dict) -> List[str]:
    found = []
    for entry in index_doc.get("manifests") or []:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(platform, dict):
            continue
        os_, arch = platform.get("os"), platform.get("architecture")
        if not os_ or not arch or os_ == "unknown":    # attestation manifests: not a platform
            continue
        text = f"{os_}/{arch}" + (f"/{platform['variant']}" if platform.get("variant") else "")
        if text not in found:
            found.append(text)
    return found


CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json")
CONFIG_READ_MAX = 64 * 1024     # bigger image configs are not read for their platform


@lru_cache(maxsize=4096)
def _config_platform(digest: str) -> Optional[str]:
    """os/architecture[/variant] from an image's config blob: one S3 read per config, cached
    for the life of the instance (a digest's content never changes)."""
    from chalicelib.storage import blobstore
    try:
        config = json.loads(blobstore.get_object(blobstore.blob_key(digest)))
    except Exception:       # missing object, not JSON: no platform to show, not an error
        return None
    if not isinstance(config, dict) or not config.get("os") or not config.get("architecture"):
        return None
    return f"{config['os']}/{config['architecture']}" + (
        f"/{config['variant']}" if config.get("variant") else "")


def _image_platforms(doc: dict) -> List[str]:
    config = doc.get("config")
    if not isinstance(config, dict) or config.get("mediaType") not in CONFIG_TYPES:
        return []
    digest, size = config.get("digest"), config.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size > CONFIG_READ_MAX:
        return []
    platform = _config_platform(digest) if oci.DIGEST_RE.match(digest) else None
    return [platform] if platform else []


def _parse(item: ManifestItem) -> dict:
    try:
        doc = json.loads(metadata.manifest_bytes(item))
        return doc if isinstance(doc, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


def _image_size(item: ManifestItem, doc: dict) -> int:
    size = int(item.size)
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("size"), int):
        size += config["size"]
    for layer in doc.get("layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("size"), int):
            size += layer["size"]
    return size


def _manifests(name: str, digests: List[str]) -> Dict[str, ManifestItem]:
    found = stats.batch_get(ManifestItem, [(repo_pk(name), manifest_sk(d)) for d in digests])
    return {sk[len("manifest#"):]: item for (_, sk), item in found.items()}


@endpoint("GET", REPO + r"/_tags", "repositories/{repository}/_tags",
          "List the tags of a repository with digest, media type, size, platforms and push "
          "time; paginated with a cursor", query=["limit", "cursor"])
def list_tags(request: Request, caller: Caller) -> dict:
    name, _, actions = _readable_repo(request, caller)
    limit = limit_arg(request, TAGS_DEFAULT, TAGS_MAX)
    cursor = request.arg("cursor") or None
    start = None
    if cursor:
        after = stats.decode_cursor(cursor)
        if after is None or not oci.TAG_RE.match(after):
            raise bad("this cursor is not one this API returned", "cursor")
        start = {"pk": {"S": repo_pk(name)}, "sk": {"S": f"tag#{after}"}}
    answer = TagItem._get_connection().query(repo_pk(name), TagItem.sk.startswith("tag#"),
                                             exclusive_start_key=start, limit=limit)
    tags = [TagItem.from_raw_data(raw) for raw in answer.get("Items", [])]
    more = answer.get("LastEvaluatedKey")
    manifests = _manifests(name, sorted({t.digest for t in tags}))
    docs = {digest: _parse(item) for digest, item in manifests.items()}
    children = sorted({c for d, item in manifests.items() if item.children
                       for c in item.children} - set(manifests))[:100]
    child_items = _manifests(name, children) if children else {}
    host = registry_host(request)
    result = []
    for tag in tags:
        tag_name = tag.sk[4:]
        item = manifests.get(tag.digest)
        doc = docs.get(tag.digest, {})
        kind, platforms, size = "image", [], int(tag.size)
        if item is not None and item.media_type in oci.INDEX_TYPES:
            kind, platforms = "index", _platforms(doc)
            size = int(item.size)
            for child in item.children or []:
                child_item = child_items.get(child) or manifests.get(child)
                if child_item is not None:
                    size += _image_size(child_item, _parse(child_item) if child in child_items
                                        else docs.get(child, {}))
        elif item is not None:
            size = _image_size(item, doc)
            platforms = _image_platforms(doc)
            if doc.get("artifactType") or (isinstance(doc.get("config"), dict) and doc[
                    "config"].get("mediaType") not in (None, "application/vnd.oci.image.config"
                                                       ".v1+json", "application/vnd.docker."
                                                       "container.image.v1+json")):
                kind = "artifact"
        result.append({"name": tag_name, "digest": tag.digest, "media_type": tag.media_type,
                       "kind": kind, "size": size, "platforms": platforms,
                       "pushed": float(tag.updated),
                       "pull_command": f"docker pull {host}/{name}:{tag_name}"})
    return {"repository": name, "tags": result,
            "can_delete": DELETE in actions,
            "next_cursor": stats.encode_cursor(more["sk"]["S"][4:]) if more else None}


@endpoint("DELETE", REPO + r"/_tags/(?P<tag>[^/]+)", "repositories/{repository}/_tags/{tag}",
          "Delete one tag (its manifest stays, reachable by digest, until the GC policy "
          "removes it)")
def delete_tag(request: Request, caller: Caller) -> dict:
    name, _, actions = _readable_repo(request, caller)
    tag = request.params["tag"]
    if not oci.TAG_RE.match(tag):
        raise bad(f"invalid tag {tag[:130]!r}", "tag", code="TAG_INVALID")
    if DELETE not in actions:
        raise forbidden(f"you may not delete tags of {name!r}", "tag")
    if not metadata.delete_tag(name, tag):
        raise not_found(f"{name} has no tag {tag!r}", "tag")
    return {"repository": name, "deleted_tag": tag}


__all__ = ["RepoMetaItem", "ApiError"]
