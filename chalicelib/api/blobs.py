"""Blob GET, HEAD and DELETE. Downloads leave through a 307 to a presigned S3 URL."""
from __future__ import annotations

from chalice import Response

from chalicelib import oci
from chalicelib.api import mirror
from chalicelib.api.router import Request, empty, route
from chalicelib.auth.scopes import DELETE, PULL
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore, metadata, mirrors

BLOB = r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"


def _linked_blob(request: Request):
    digest = oci.check_digest(request.params["digest"])
    link = metadata.get_link(request.name, digest)
    if link is None:
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    return digest, link


@route("GET", BLOB, "/v2/{name}/blobs/{digest}", PULL)
def get_blob(request: Request) -> Response:
    rule = mirrors.rule_for(request.name)
    if rule is not None and metadata.get_link(request.name, request.params["digest"]) is None:
        return mirror.serve_blob(request, rule, oci.check_digest(request.params["digest"]))
    digest, link = _linked_blob(request)
    headers = {"Docker-Content-Digest": digest}
    if request.method == "HEAD":
        # A presigned URL is bound to one method, so HEAD answers from metadata.
        headers["Content-Length"] = str(int(link.size))
        return Response(body="", status_code=200, headers=headers)
    headers["Location"] = blobstore.presigned_get_url(metadata.object_key(digest, link))
    return empty(307, headers)


@route("DELETE", BLOB, "/v2/{name}/blobs/{digest}", DELETE)
def delete_blob(request: Request) -> Response:
    digest = oci.check_digest(request.params["digest"])
    if not metadata.remove_link(request.name, digest):
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
    return empty(202)
