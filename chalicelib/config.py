"""Settings read from the environment (Chalice stage config in AWS, `make run` locally)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional


DEFAULT_SERVICE = "berth"     # BERTH_SERVICE when unset (the deploy step's challenge uses it too)


@dataclass(frozen=True)
class Settings:
    table: str
    bucket: str
    region: str
    endpoint: Optional[str]       # one endpoint for S3 and DynamoDB: moto locally, None in AWS
    presign_expires: int          # seconds a blob download URL stays valid
    inline_manifest_max: int      # bigger manifests go to S3 (DynamoDB items stop at 400 KB)
    service: str                  # the token `aud` and the `service` of auth challenges
    issuer: str                   # the token `iss`
    token_ttl: int                # seconds a registry token is valid
    public_url: Optional[str]     # base URL clients use, for the token realm; else from Host
    signup: str                   # self-service sign-up: closed, invite or open (BERTH_SIGNUP)


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings(
        table=os.environ.get("BERTH_TABLE", "berth"),
        bucket=os.environ.get("BERTH_BUCKET", "berth-blobs"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint=os.environ.get("BERTH_AWS_ENDPOINT") or None,
        presign_expires=int(os.environ.get("BERTH_PRESIGN_EXPIRES", "300")),
        inline_manifest_max=int(os.environ.get("BERTH_INLINE_MANIFEST_MAX", str(350 * 1024))),
        service=os.environ.get("BERTH_SERVICE", DEFAULT_SERVICE),
        issuer=os.environ.get("BERTH_ISSUER", "berth"),
        token_ttl=int(os.environ.get("BERTH_TOKEN_TTL", "300")),
        public_url=(os.environ.get("BERTH_PUBLIC_URL") or "").rstrip("/") or None,
        signup=os.environ.get("BERTH_SIGNUP", "closed").strip().lower() or "closed",
    )
