"""What a deployment puts in front of the API Lambda, in one place.

API Gateway (REST API, Lambda proxy) stands between the clients and the app, and two of its rules
break a registry as they stand (AWS sources in docs/deploy.md, "The front door"):

* It renames a `WWW-Authenticate` header returned by a Lambda proxy integration to
  `X-Amzn-Remapped-WWW-Authenticate`: the app's own 401 challenge never reaches a client, and every
  client finds the token endpoint through that header (`docker login` would fail).
* It passes a request body to Lambda base64-encoded only when its Content-Type matches the API's
  binaryMediaTypes, otherwise as UTF-8 text, which mangles binary data. dockerd sends layer bodies
  without any Content-Type (treated as application/json), so its pushes would all fail.

The front door answers both without anything in front of API Gateway:

* A TOKEN Lambda authorizer (`registry_auth` in app.py, `chalicelib/auth/authorizer.py`) on the
  registry routes, with the Authorization header as its identity source. A request without a
  bearer token never reaches a function: API Gateway answers it with the UNAUTHORIZED Gateway
  Response, which carries the Bearer challenge below (Gateway Responses may set any header).
  A token that fails verification gets the same answer. The token endpoint, console and
  management API (`/v2/_berth/...`) have no authorizer: anonymous token requests must get through.
* binaryMediaTypes `*/*`: every request body, with or without a Content-Type, reaches the Lambda
  base64-encoded, byte for byte. Chalice's own `app.api.binary_types` stays at its default (it
  also decides which responses Chalice base64-encodes, and makes Chalice answer 400 to requests
  whose Accept does not match a binary response type).

The deploy step (berth_local/frontdoor_template.py) writes these values into the packaged
template, and the local gateway's aws mode (berth_local/gateway.py) applies the same values, so a
test against `BERTH_GATEWAY=aws make run` sees what a client of the deployed API sees.
"""
from __future__ import annotations

import json
from typing import Mapping

# The API's binaryMediaTypes (x-amazon-apigateway-binary-media-types).
BINARY_MEDIA_TYPES: tuple[str, ...] = ("*/*",)

# The registry-route authorizer: a Chalice built-in (TOKEN) authorizer.
AUTHORIZER_NAME = "registry_auth"
AUTHORIZER_HEADER = "Authorization"
# API Gateway refuses a token that does not match without calling the authorizer: only bearer
# tokens (JWTs) are accepted on registry routes, as the challenge says.
AUTHORIZER_TOKEN_PATTERN = r"^Bearer [A-Za-z0-9._~+/=-]+$"
# How long API Gateway caches the authorizer's answer per token (the app still checks expiry
# and scope on every request). A registry token lives BERTH_TOKEN_TTL (300 s) by default.
AUTHORIZER_TTL_SECONDS = 300

TOKEN_ENDPOINT_PATH = "/v2/_berth/token"
API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


def challenge(public_url: str, service: str) -> str:
    """The `WWW-Authenticate` value of the UNAUTHORIZED Gateway Response.

    Static, as Gateway Response headers are (a literal or one request value, no concatenation):
    no per-request scope. docker, containerd, skopeo and podman compute the scope of a pull or
    push from the image reference themselves and only need realm and service from the challenge.
    """
    return f'Bearer realm="{public_url.rstrip("/")}{TOKEN_ENDPOINT_PATH}",service="{service}"'


def _oci_error_body(code: str, message: str) -> str:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]},
                      separators=(",", ":"))


# Gateway Responses: status, body (application/json) and headers besides the challenge.
# UNAUTHORIZED: no/ill-formed bearer token, or the authorizer said "Unauthorized".
# ACCESS_DENIED: the authorizer returned a Deny policy (it never does; kept registry-shaped).
GATEWAY_RESPONSES: Mapping[str, dict] = {
    "UNAUTHORIZED": {
        "status": 401,
        "body": _oci_error_body("UNAUTHORIZED", "authentication required: log in to this registry "
                                "(docker login HOST) or ask its token endpoint for a token"),
        "challenge": True,
    },
    "ACCESS_DENIED": {
        "status": 403,
        "body": _oci_error_body("DENIED", "requested access to the resource is denied"),
        "challenge": False,
    },
}


# The media type of the Gateway Responses' body template: API Gateway labels the answer with it.
GATEWAY_RESPONSE_MEDIA_TYPE = "application/json"


def gateway_response_headers(kind: str, public_url: str, service: str) -> dict[str, str]:
    """The headers a Gateway Response sets (responseParameters; its Content-Type comes from the
    body template's media type, GATEWAY_RESPONSE_MEDIA_TYPE, not from a header mapping)."""
    headers = {API_VERSION_HEADER[0]: API_VERSION_HEADER[1]}
    if GATEWAY_RESPONSES[kind]["challenge"]:
        headers["WWW-Authenticate"] = challenge(public_url, service)
    return headers
