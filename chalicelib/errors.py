"""OCI distribution-spec error codes and the exception that carries them to the client."""
from __future__ import annotations

from typing import Any, Dict, Optional

# code -> (HTTP status, message) as distribution-spec's error code table defines them.
ERROR_CODES: Dict[str, tuple] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown to registry"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "TAG_INVALID": (400, "manifest tag did not match URI"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # distribution's errcode.ErrorCodeUnavailable: a mirror's upstream cannot be reached.
    "UNAVAILABLE": (503, "service unavailable"),
    # Not in the OCI table, but what distribution answers for a bad `n`.
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "RANGE_INVALID": (416, "invalid content range"),
    "UNKNOWN": (500, "unknown error"),
}


class RegistryError(Exception):
    """A client-visible registry error; the API layer renders it as the OCI error envelope."""

    def __init__(self, code: str, message: Optional[str] = None, *,
                 detail: Any = None, status: Optional[int] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        default_status, default_message = ERROR_CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.message = message or default_message
        self.detail = detail if detail is not None else {}
        self.status = status or default_status
        self.headers = headers or {}

    def envelope(self) -> Dict[str, Any]:
        return {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
