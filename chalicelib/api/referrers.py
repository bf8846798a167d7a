"""The OCI 1.1 referrers API: manifests whose subject is a given digest, as an image index."""
from __future__ import annotations

from chalice import Response

from chalicelib import oci
from chalicelib.api.router import Request, json_response, route
from chalicelib.auth.scopes import PULL
from chalicelib.storage import metadata


@route("GET", r"(?P<name>.+)/referrers/(?P<digest>[^/]+)", "/v2/{name}/referrers/{digest}",
       PULL)
def referrers(request: Request) -> Response:
    subject = oci.check_digest(request.params["digest"])
    wanted = request.arg("artifactType")
    descriptors = []
    for item in metadata.list_referrers(request.name, subject):
        if wanted and item.artifact_type != wanted:
            continue
        descriptor = {"mediaType": item.media_type, "digest": item.sk.rsplit("#", 1)[1],
                      "size": int(item.size)}
        if item.artifact_type:
            descriptor["artifactType"] = item.artifact_type
        annotations = metadata.referrer_annotations(request.name, item)
        if annotations:
            descriptor["annotations"] = annotations
        descriptors.append(descriptor)
    headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descriptors}
    return json_response(index, headers=headers, content_type=oci.OCI_INDEX)
