"""Berth: an OCI container registry on AWS Chalice (API Gateway + Lambda, DynamoDB, S3).

This file only wires routes to the handlers in chalicelib/. The routes are relative to the API
Gateway stage, which is named `v2`: https://<api>.execute-api.<region>.amazonaws.com/v2/ is then
the registry's /v2/ (a Docker image reference cannot carry a path before /v2/), and a custom
domain maps its base path `v2` to the stage. The local gateway serves the app the same way.

The registry routes sit behind a Lambda authorizer so that API Gateway itself sends the Bearer
challenge (it renames a Lambda's WWW-Authenticate); `/_berth/...` (token endpoint, console,
management API) has none. chalicelib/frontdoor.py explains the front door.
"""
import os

from chalice import Chalice, Rate

from chalicelib import frontdoor
from chalicelib.api import dispatch

app = Chalice(app_name="berth")
dispatch.configure_logging(os.environ.get("BERTH_LOG_LEVEL", "INFO"))
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@app.authorizer(name=frontdoor.AUTHORIZER_NAME, ttl_seconds=frontdoor.AUTHORIZER_TTL_SECONDS,
                header=frontdoor.AUTHORIZER_HEADER)
def registry_auth(auth_request):
    from chalicelib.auth import authorizer
    return authorizer.authorize(auth_request)


@app.route("/", methods=["GET", "HEAD"], authorizer=registry_auth)
def api_base():
    return dispatch.handle(app.current_request, "")


# Any Content-Type: blobs are octet-streams, manifests carry their own media types.
@app.route("/{proxy+}", methods=ALL_METHODS, content_types=["*/*"], authorizer=registry_auth)
def api_v2():
    request = app.current_request
    return dispatch.handle(request, request.uri_params["proxy"])


# The token endpoint, the console and the management API: reachable without a token.
@app.route("/_berth/{proxy+}", methods=ALL_METHODS, content_types=["*/*"])
def api_berth():
    request = app.current_request
    return dispatch.handle(request, "_berth/" + request.uri_params["proxy"])


# Garbage collection (chalicelib/gc.py). Chalice reads the rate when it packages or deploys the
# app, so BERTH_GC_RATE_MINUTES must be set in the environment of `chalice deploy`/`package`.
@app.schedule(Rate(int(os.environ.get("BERTH_GC_RATE_MINUTES", "60")), unit=Rate.MINUTES),
              name="gc", description="Berth garbage collection sweep")
def gc_sweep(event):
    from chalicelib import gc
    return gc.scheduled(event)


# Copies of big blobs into a mirror's cache (chalicelib/api/mirror.py): invoked asynchronously by
# the API function (BERTH_MIRROR_COPY_FUNCTION), so a copy has this function's 15 minutes rather
# than API Gateway's 29 seconds.
@app.lambda_function(name="mirror_copy")
def mirror_copy(event, context):
    from chalicelib.api import mirror
    return mirror.copy_event(event)
