"""Berth: an OCI container registry on AWS Chalice (API Gateway + Lambda, DynamoDB, S3).

This file only wires routes to the handlers in chalicelib/.
"""
import os

from chalice import Chalice

from chalicelib.api import dispatch

app = Chalice(app_name="berth")
dispatch.configure_logging(os.environ.get("BERTH_LOG_LEVEL", "INFO"))
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@app.route("/v2", methods=["GET", "HEAD"])
def api_base():
    return dispatch.handle(app.current_request, "")


# Any Content-Type: blobs are octet-streams, manifests carry their own media types.
@app.route("/v2/{proxy+}", methods=ALL_METHODS, content_types=["*/*"])
def api_v2():
    request = app.current_request
    return dispatch.handle(request, request.uri_params["proxy"])
