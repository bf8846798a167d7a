"""Blob bytes in S3: content-addressed objects, upload staging, multipart and presigned GETs.

Key layout:
  blobs/<algorithm>/<first two hex>/<hex>   one object per digest, shared by every repository
  blobs/u/<upload id>                       a blob assembled by a chunked upload, where its
                                            multipart upload put it (no copy at commit)
  manifests/<algorithm>/<hex>               manifests too big to keep inline in DynamoDB
  uploads/<upload id>/...                   staging of an upload session (parts, tail, assembly)
"""
from __future__ import annotations

import threading
from typing import Iterator, List, Optional, Sequence, Tuple

from chalicelib.config import settings

_client = None
_client_lock = threading.Lock()
READ_CHUNK = 8 * 1024 * 1024


def client():
    """One S3 client per process, created on first use (boto3 import is a cold-start cost)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                import boto3
                from botocore.config import Config
                cfg = settings()
                _client = boto3.client(
                    "s3", region_name=cfg.region, endpoint_url=cfg.endpoint,
                    config=Config(signature_version="s3v4", max_pool_connections=32,
                                  s3={"addressing_style": "path" if cfg.endpoint else "auto"},
                                  retries={"max_attempts": 3, "mode": "standard"}))
    return _client


def reset_client() -> None:
    """Forget the cached client (tests point Berth at a new endpoint)."""
    global _client
    _client = None


def _bucket() -> str:
    return settings().bucket


def blob_key(digest: str) -> str:
    algorithm, encoded = digest.split(":", 1)
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}"


def manifest_key(digest: str) -> str:
    algorithm, encoded = digest.split(":", 1)
    return f"manifests/{algorithm}/{encoded}"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/"


def assembled_key(upload_id: str) -> str:
    """Where a chunked upload's multipart upload assembles the blob: it stays there."""
    return f"blobs/u/{upload_id}"


def presigned_get_url(key: str, expires: Optional[int] = None) -> str:
    """A download URL for `key`; signing is local, so this costs no request."""
    return client().generate_presigned_url(
        "get_object", Params={"Bucket": _bucket(), "Key": key},
        ExpiresIn=expires or settings().presign_expires)


def presigned_put_url(key: str, length: int, sha256_hex: str, expires: int) -> str:
    """An upload URL for exactly `length` bytes whose SHA-256 is `sha256_hex` at `key`. Both are
    signed headers (Content-Length, x-amz-checksum-sha256): S3 refuses any other body."""
    import base64
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    return client().generate_presigned_url(
        "put_object", Params={"Bucket": _bucket(), "Key": key, "ContentLength": length,
                              "ChecksumSHA256": checksum},
        ExpiresIn=expires)


def open_object(key: str) -> Tuple[Iterator[bytes], str, int]:
    """(its bytes in pieces of READ_CHUNK, its ETag, its size) of one object, read once."""
    answer = client().get_object(Bucket=_bucket(), Key=key)
    body = answer["Body"]

    def pieces() -> Iterator[bytes]:
        try:
            while True:
                data = body.read(READ_CHUNK)
                if not data:
                    return
                yield data
        finally:
            body.close()
    return pieces(), answer["ETag"], int(answer["ContentLength"])


def put_object(key: str, data: bytes) -> None:
    client().put_object(Bucket=_bucket(), Key=key, Body=data)


def get_object(key: str) -> bytes:
    return client().get_object(Bucket=_bucket(), Key=key)["Body"].read()


def iter_object(key: str) -> Iterator[bytes]:
    return open_object(key)[0]


def copy_object(source: str, dest: str) -> None:
    """Server-side copy of an object of at most 5 GiB (a tail); S3 does the work."""
    client().copy_object(Bucket=_bucket(), Key=dest, CopySource={"Bucket": _bucket(), "Key": source})


COPY_OBJECT_MAX = 5 * 1024 ** 3   # CopyObject's limit
COPY_PART = 1024 ** 3


def copy_any(source: str, dest: str, size: int) -> None:
    """Server-side copy of an object of any size: CopyObject up to 5 GiB, else a multipart
    upload of 1 GiB UploadPartCopy ranges. Only taking a blob back from a dead sweep needs it."""
    if size <= COPY_OBJECT_MAX:
        copy_object(source, dest)
        return
    mpu = create_multipart(dest)
    parts = []
    for number, start in enumerate(range(0, size, COPY_PART), start=1):
        end = min(start + COPY_PART, size) - 1
        answer = client().upload_part_copy(
            Bucket=_bucket(), Key=dest, UploadId=mpu, PartNumber=number,
            CopySource={"Bucket": _bucket(), "Key": source}, CopySourceRange=f"bytes={start}-{end}")
        parts.append((number, answer["CopyPartResult"]["ETag"]))
    complete_multipart(dest, mpu, parts)


def delete_object(key: str) -> None:
    client().delete_object(Bucket=_bucket(), Key=key)


def delete_prefix(prefix: str) -> None:
    s3 = client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=_bucket(), Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=_bucket(), Delete={"Objects": keys, "Quiet": True})


def create_multipart(key: str) -> str:
    return client().create_multipart_upload(Bucket=_bucket(), Key=key)["UploadId"]


def upload_part(key: str, mpu_id: str, number: int, data: bytes) -> str:
    return client().upload_part(Bucket=_bucket(), Key=key, UploadId=mpu_id, PartNumber=number,
                                Body=data)["ETag"]


def upload_part_copy(key: str, mpu_id: str, number: int, source: str,
                     if_match: Optional[str] = None) -> str:
    """Part `number` copied from object `source` (only if its ETag is still `if_match`)."""
    extra = {"CopySourceIfMatch": if_match} if if_match else {}
    answer = client().upload_part_copy(Bucket=_bucket(), Key=key, UploadId=mpu_id,
                                       PartNumber=number,
                                       CopySource={"Bucket": _bucket(), "Key": source}, **extra)
    return answer["CopyPartResult"]["ETag"]


def complete_multipart(key: str, mpu_id: str, parts: Sequence[Tuple[int, str]]) -> None:
    client().complete_multipart_upload(
        Bucket=_bucket(), Key=key, UploadId=mpu_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})


def abort_multipart(key: str, mpu_id: str) -> None:
    try:
        client().abort_multipart_upload(Bucket=_bucket(), Key=key, UploadId=mpu_id)
    except client().exceptions.NoSuchUpload:
        pass


def list_keys(prefix: str) -> List[str]:
    keys: List[str] = []
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=_bucket(), Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys
