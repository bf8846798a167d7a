"""The rules API Gateway (REST API, Lambda proxy) and Lambda apply to a request, as AWS documents
them: what the local gateway's aws mode (`BERTH_GATEWAY=aws`) enforces, in one place.

Each rule names the AWS page it comes from; docs/deploy.md lists them with the same links. Where a
page is unclear the stricter reading is emulated (never kinder than AWS), and the comment says so.
"""
from __future__ import annotations

import json

# https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
#   "Payload size: 10 MB" (REST APIs). Read as 10,000,000 bytes, the stricter of 10 MB / 10 MiB.
API_GATEWAY_MAX_PAYLOAD = 10_000_000
#   "Integration timeout: 50 milliseconds - 29 seconds for all integration types".
INTEGRATION_TIMEOUT_SECONDS = 29.0

# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
#   "Invocation payload (request and response): 6 MB each for request and response
#   (synchronous)". The Invoke API's own error names the number: "Request must be smaller than
#   6291456 bytes". It counts the whole event (headers, base64 body, request context), so the
#   gateway measures the JSON event it sends, and the JSON response it gets back.
LAMBDA_MAX_PAYLOAD = 6_291_456

# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-known-issues.html
#   table "Header handling for REST APIs", column for Lambda proxy integrations, response side.
#   Remapped to X-Amzn-Remapped-<name>:
RESPONSE_HEADERS_REMAPPED = frozenset(
    {"authorization", "connection", "content-md5", "max-forwards", "user-agent", "www-authenticate"})
#   Remapped, then overwritten with API Gateway's own value:
RESPONSE_HEADERS_REMAPPED_AND_OVERWRITTEN = frozenset({"date", "server"})
#   Dropped:
RESPONSE_HEADERS_DROPPED = frozenset(
    {"expect", "host", "proxy-authenticate", "te", "transfer-encoding", "trailer", "upgrade", "via"})
#   Request side: Transfer-Encoding is not passed on ("Request streaming isn't supported"): the
#   body is buffered whole and subject to the payload limits above; no Content-Length is added
#   for a chunked request (stricter reading: the app must not depend on one).
REQUEST_HEADERS_DROPPED = frozenset({"transfer-encoding", "expect", "connection", "keep-alive", "te"})

# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-payload-encodings.html
#   A request body reaches Lambda base64-encoded only when its Content-Type matches the API's
#   binaryMediaTypes, else as a UTF-8 string. "API Gateway uses the first Accept header from
#   clients to determine if a response should return binary media": a response the Lambda
#   base64-encoded is decoded only when the first media type of the request's Accept matches
#   binaryMediaTypes. No Accept at all is read as not matching (stricter reading: the page does
#   not say).
# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-payload-encodings-workflow.html
#   (the request table) and
# https://docs.aws.amazon.com/apigateway/latest/developerguide/integration-passthrough-behaviors.html
#   a request without Content-Type is handled as application/json; so it is binary only when
#   binaryMediaTypes holds application/json or a wildcard that covers it (`*/*`).
DEFAULT_REQUEST_CONTENT_TYPE = "application/json"


def _json(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# The front door's authorizer, as API Gateway runs it (berth_local/gateway.py Gateway._authorize):
# https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-use-lambda-authorizer.html
#   a TOKEN authorizer's identity source is a header; a request without it, or whose value does
#   not match identityValidationExpression, gets 401 without the function being called; the
#   answer is cached per token for the authorizer's TTL.
# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-lambda-authorizer-output.html
#   the function returns a principalId and an IAM policy (Allow/Deny execute-api:Invoke on the
#   method ARN) and a context passed to the integration as requestContext.authorizer; the error
#   "Unauthorized" is a 401, a Deny a 403, any other failure a 500.
# https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html
#   UNAUTHORIZED (401), ACCESS_DENIED (403), AUTHORIZER_FAILURE (500): the Gateway Responses.
# https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html
#   a function that fails (an unhandled error, or a response not in the proxy format) is a 502.

# What API Gateway answers by itself (bodies as reported by its users; the 413 cannot be
# customised: "Customizing the default gateway response for 413 REQUEST_TOO_LARGE isn't
# currently supported", api-gateway-known-issues.html).
REQUEST_TOO_LONG = (413, _json({"message": "Request Too Long"}))
ENDPOINT_TIMED_OUT = (504, _json({"message": "Endpoint request timed out"}))
INTERNAL_SERVER_ERROR = (502, _json({"message": "Internal server error"}))
AUTHORIZER_FAILURE = (500, _json({"message": None}))
ERROR_TYPE_HEADER = "x-amzn-ErrorType"


def remap_response_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Apply the REST API's response-header rules to a Lambda proxy response's headers."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in RESPONSE_HEADERS_DROPPED:
            continue
        if lower in RESPONSE_HEADERS_REMAPPED or lower in RESPONSE_HEADERS_REMAPPED_AND_OVERWRITTEN:
            out.append((f"X-Amzn-Remapped-{name}", value))
            continue
        out.append((name, value))
    return out
