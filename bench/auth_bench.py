"""What token verification costs: manifest GETs with a Bearer token vs the same GETs with the
authorization step switched off, through the Chalice app as Lambda calls it, on moto.

Also times the token endpoint (a login: scrypt with the production parameters).
usage: auth_bench.py [--requests N] [--out results.json]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from berth_local import backend  # noqa: E402


def event(method: str, path: str, headers=None, body: bytes = b"", query=None) -> dict:
    resource = "/{proxy+}" if path.startswith("/v2/") and path != "/v2/" else "/"
    return {"httpMethod": method, "path": path[3:] or "/", "resource": resource,
            "headers": headers or {}, "multiValueHeaders": {},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": {"proxy": path[4:]} if resource != "/" else None,
            "stageVariables": None,
            "requestContext": {"resourcePath": resource, "httpMethod": method,
                               "requestId": uuid.uuid4().hex, "identity": {"sourceIp": "127.0.0.1"}},
            "body": base64.b64encode(body).decode() if body else None,
            "isBase64Encoded": bool(body)}


def rate(app, ev: dict, n: int) -> float:
    """Requests per second over n sequential calls (best of three rounds)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            assert app(ev, None)["statusCode"] == 200
        best = max(best, n / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()
    endpoint, server = backend.start_moto_thread()
    backend.use_endpoint(endpoint)
    os.environ["BERTH_TOKEN_KEY"] = os.urandom(32).hex()
    os.environ["BERTH_LOG_LEVEL"] = "WARNING"
    from chalicelib.auth import accounts
    from chalicelib.storage.setup import ensure_resources
    ensure_resources()
    accounts.create_user("bench", "bench password", admin=True)
    from app import app
    from chalicelib.api import dispatch
    basic = base64.b64encode(b"bench:bench password").decode()
    logins = []
    for _ in range(5):
        started = time.perf_counter()
        answer = app(event("GET", "/v2/_berth/token", {"Authorization": f"Basic {basic}"},
                           query={"service": "berth",
                                  "scope": "repository:bench/img:pull,push"}), None)
        logins.append(time.perf_counter() - started)
    token = json.loads(answer["body"])["token"]
    auth = {"Authorization": f"Bearer {token}"}
    config = b'{"os":"linux"}'
    digest = "sha256:" + __import__("hashlib").sha256(config).hexdigest()
    assert app(event("POST", "/v2/bench/img/blobs/uploads/", auth, config,
                     {"digest": digest}), None)["statusCode"] == 201
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest, "size": len(config)},
                           "layers": []}).encode()
    put = app(event("PUT", "/v2/bench/img/manifests/latest",
                    dict(auth, **{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
                    manifest), None)
    assert put["statusCode"] == 201, put
    get = event("GET", "/v2/bench/img/manifests/latest", auth)
    with_token = rate(app, get, args.requests)
    real_authorize = dispatch.authorize
    dispatch.authorize = lambda request, route: None       # the same request, no token check
    try:
        without = rate(app, event("GET", "/v2/bench/img/manifests/latest"), args.requests)
    finally:
        dispatch.authorize = real_authorize
    result = {"manifest_get_rps_with_token": round(with_token, 1),
              "manifest_get_rps_without_auth": round(without, 1),
              "ratio": round(with_token / without, 3),
              "first_login_seconds": round(logins[0], 3),
              "repeated_login_seconds_median": round(statistics.median(logins[1:]), 3)}
    server.stop()
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
