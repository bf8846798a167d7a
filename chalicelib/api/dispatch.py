"""The bridge from Chalice to the registry handlers: request adaptation, errors, logging."""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Optional

from chalice import Response

# Importing the resource modules registers their routes, most specific first.
from chalicelib.api import manage  # noqa: F401  (/v2/_berth/api/ and /v2/_berth/console/)
from chalicelib.api import (base, token, catalog, uploads, blobs, manifests, tags,  # noqa: F401
                            referrers)
from chalicelib.api.access import authorize
from chalicelib.api.router import Request, error_response, resolve
from chalicelib.errors import RegistryError

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
log = logging.getLogger("berth.access")  # "berth" is Chalice's own app logger


def _adapt(chalice_request, path: str) -> Request:
    query: dict = {}
    if chalice_request.query_params is not None:
        for key in chalice_request.query_params.keys():
            query[key] = chalice_request.query_params.getlist(key)
    headers = {k.lower(): v for k, v in chalice_request.headers.items()}
    raw = {}

    def body() -> bytes:
        if "body" not in raw:
            data = chalice_request.raw_body
            raw["body"] = data if isinstance(data, bytes) else data.encode("utf-8")
        return raw["body"]
    identity = (chalice_request.context or {}).get("identity") or {}
    return Request(method=chalice_request.method, path=path, params={}, query=query,
                   headers=headers, body_reader=body, source_ip=identity.get("sourceIp"))


def handle(chalice_request, path: str) -> Response:
    """Serve one /v2/<path> request; never lets an exception become a stack trace."""
    started = time.monotonic()
    template = "/v2/?"
    request = None
    try:
        request = _adapt(chalice_request, path)
        route, request.params = resolve(request.method, path)
        template = route.template
        authorize(request, route)
        response = route.handler(request)
    except RegistryError as error:
        response = error_response(error)
    except Exception:  # a bug of ours: log it, answer a generic 500 without details
        log.exception("unhandled error on %s %s", chalice_request.method, template)
        response = error_response(RegistryError("UNKNOWN", "internal error"))
    response.headers.update(API_VERSION_HEADER)
    user = request.grants.subject if request is not None and request.grants else None
    _log_request(chalice_request, template, response.status_code, started, user)
    return response


def _log_request(chalice_request, template: str, status: int, started: float,
                 user: Optional[str]) -> None:
    """One structured line per request: the route template and the token's subject only, never
    credentials, tokens, bodies or repository contents."""
    if not log.isEnabledFor(logging.INFO):
        return
    context = chalice_request.context or {}
    log.info(json.dumps({"request_id": context.get("requestId"), "method": chalice_request.method,
                         "route": template, "status": status, "user": user,
                         "ms": round((time.monotonic() - started) * 1000, 1)}))


def configure_logging(level: Optional[str] = None) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level or logging.INFO)
