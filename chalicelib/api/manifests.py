"""Manifest GET, HEAD, PUT and DELETE, by tag or by digest."""
from __future__ import annotations

from typing import Optional, Tuple

from chalice import Response

from chalicelib import manifests, oci
from chalicelib.api import mirror
from chalicelib.api.router import Request, empty, route
from chalicelib.auth.scopes import DELETE, PULL, PUSH
from chalicelib.errors import RegistryError
from chalicelib.storage import metadata, mirrors

MANIFEST = r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"


def _reference(request: Request, *, for_write: bool = False) -> Tuple[Optional[str], Optional[str]]:
    """(tag, digest) of the path's reference; exactly one is set.

    A reference that can never be a tag is TAG_INVALID when pushed, but on reads and deletes it
    simply names no manifest: 404, as the spec (and its conformance suite) require.
    """
    reference = request.params["reference"]
    if oci.looks_like_digest(reference):
        return None, oci.check_digest(reference)
    if for_write:
        return oci.check_tag(reference), None
    if not oci.TAG_RE.match(reference):
        raise RegistryError("MANIFEST_UNKNOWN", detail={"tag": reference[:200]})
    return reference, None


@route("GET", MANIFEST, "/v2/{name}/manifests/{reference}", PULL)
def get_manifest(request: Request) -> Response:
    tag, digest = _reference(request)
    rule = mirrors.rule_for(request.name)
    if rule is not None:    # a pull-through cache of another registry (chalicelib/api/mirror.py)
        digest = mirror.manifest_digest(request, rule, tag, digest)
    elif tag is not None:
        tag_item = metadata.get_tag(request.name, tag)
        if tag_item is None:
            raise RegistryError("MANIFEST_UNKNOWN", detail={"tag": tag})
        digest = tag_item.digest
    item = metadata.get_manifest(request.name, digest)
    if item is None:
        raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": digest})
    headers = {"Content-Type": item.media_type, "Docker-Content-Digest": digest,
               "Content-Length": str(int(item.size))}
    body = "" if request.method == "HEAD" else metadata.manifest_bytes(item).decode("utf-8")
    return Response(body=body, status_code=200, headers=headers)


@route("PUT", MANIFEST, "/v2/{name}/manifests/{reference}", PUSH)
def put_manifest(request: Request) -> Response:
    tag, digest = _reference(request, for_write=True)
    body = request.body
    algorithm = oci.parse_digest(digest)[0] if digest else "sha256"
    actual = oci.digest_of(body, algorithm)
    if digest is not None and actual != digest:
        raise RegistryError("DIGEST_INVALID", f"the manifest's content hashes to {actual}, "
                            f"not {digest}", detail={"digest": digest})
    record = manifests.parse(body, request.header("content-type"), actual)
    manifests.check_references(request.name, record)
    metadata.ensure_repository(request.name)
    metadata.put_manifest(request.name, record, tag)
    headers = {"Location": f"/v2/{request.name}/manifests/{actual}",
               "Docker-Content-Digest": actual}
    if record.subject:
        headers["OCI-Subject"] = record.subject
    return empty(201, headers)


@route("DELETE", MANIFEST, "/v2/{name}/manifests/{reference}", DELETE)
def delete_manifest(request: Request) -> Response:
    tag, digest = _reference(request)
    if tag is not None:
        if not metadata.delete_tag(request.name, tag):
            raise RegistryError("MANIFEST_UNKNOWN", detail={"tag": tag})
    elif not metadata.delete_manifest(request.name, digest):
        raise RegistryError("MANIFEST_UNKNOWN", detail={"digest": digest})
    return empty(202)
