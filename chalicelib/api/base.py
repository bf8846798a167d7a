"""GET /v2/: the API version check, which `docker login` also uses to test credentials."""
from __future__ import annotations

from chalice import Response

from chalicelib.api.router import SIGNED_IN, Request, json_response, route


@route("GET", r"", "/v2/", SIGNED_IN)
def api_base(request: Request) -> Response:
    return json_response({})
