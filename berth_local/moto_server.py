"""moto's server with DynamoDB made linearizable (see moto_dynamodb.py) and a multipart
completion that does not copy the object five times: what `make run` starts.

Why the completion: moto 5.2.5's CompleteMultipartUpload reads every part into one bytearray,
copies it again for a checksum it does not compute when none was asked for, copies it to bytes,
and writes that into the new object: 2 GiB took 26 s here (and several GiB of RAM), near API
Gateway's 29 s, while S3 assembles parts without moving bytes. The replacement makes the same
checks in the same order (every part exists with the ETag named, `InvalidPart`; every part but
the last at least 5 MiB, `EntityTooSmall`; no parts, `MalformedXML`), gives the object the same
ETag (MD5 of the parts' MD5s, `-N`), metadata, tags, ACL and notifications through moto's own
put_object, and writes the parts' bytes into the object one part at a time. What a client sees
(answers, errors, the object's bytes and ETag) is unchanged; only the time and memory are not.
Uploads that asked for a checksum algorithm keep moto's own code.

And two checks S3 makes that moto 5.2.5 does not, both relied on by the pieces `berth proxy`
puts in S3 (chalicelib/uploads.py):
- a PutObject that carries `x-amz-checksum-sha256` is refused (400 BadDigest) when its body does
  not hash to it (https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html);
  moto stores the claim unchecked unless `x-amz-sdk-checksum-algorithm` comes with it, which a
  presigned upload does not send;
- an UploadPartCopy with `x-amz-copy-source-if-match` is refused (412 PreconditionFailed) when
  the source's ETag is another (https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html);
  moto ignores the header.

usage: python -m berth_local.moto_server -H 127.0.0.1 -p PORT
"""
import base64
import hashlib
import sys
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from berth_local.moto_dynamodb import serialized


def _validated_parts(multipart: Any, body: Iterator[tuple[int, str]]) -> tuple[list, str]:
    """moto's FakeMultipart.complete checks, without joining the bytes: (parts, ETag)."""
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import S3_UPLOAD_PART_MIN_SIZE
    parts, md5s, last = [], bytearray(), None
    for number, etag in body:
        part = multipart.parts.get(number)
        if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
            raise InvalidPart()
        if last is not None and last.contentsize < S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part.etag.replace('"', "")))
        parts.append(part)
        last = part
    if not parts:
        raise MalformedXML
    return parts, f"{hashlib.md5(bytes(md5s)).hexdigest()}-{len(parts)}"


def cheaper_multipart_completion() -> None:
    """Install the completion described above on moto's S3 backend (this process only)."""
    from moto.s3 import notifications
    from moto.s3.models import S3Backend
    original = S3Backend.complete_multipart_upload

    def complete_multipart_upload(self, bucket_name: str, multipart_id: str, body):
        bucket = self.get_bucket(bucket_name)
        multipart = bucket.multiparts[multipart_id]
        if multipart.metadata.get("x-amz-checksum-algorithm"):
            return original(self, bucket_name, multipart_id, body)
        parts, etag = _validated_parts(multipart, body)
        key = self.put_object(bucket_name, multipart.key_name, b"", storage=multipart.storage,
                              etag=etag, multipart=multipart, encryption=multipart.sse_encryption,
                              kms_key_id=multipart.kms_key_id)
        with key.lock:
            for part in parts:
                key._value_buffer.write(part.value)
            key.contentsize = sum(part.contentsize for part in parts)
        del bucket.multiparts[multipart_id]      # closes the parts' buffers: only now
        key.set_metadata(multipart.metadata)
        self.put_object_tagging(key, multipart.tags)
        self.put_object_acl(bucket_name=bucket_name, key_name=key.name, acl=multipart.acl,
                            disable_notification=True)
        notifications.send_event(
            self.account_id,
            notifications.S3NotificationEvent.OBJECT_CREATED_COMPLETE_MULTIPART_UPLOAD_EVENT,
            bucket, bucket.keys.get(multipart.key_name))
        return key
    S3Backend.complete_multipart_upload = complete_multipart_upload


def s3_checks() -> None:
    """Install the two checks described above (this process only)."""
    from moto.s3.exceptions import PreconditionFailed, S3ClientError
    from moto.s3.responses import S3Response
    put_object, upload_part_copy = S3Response.put_object, S3Response.upload_part_copy

    def checked_put_object(self):
        claimed = self.headers.get("x-amz-checksum-sha256")
        if claimed is not None:
            actual = base64.b64encode(hashlib.sha256(self.body or b"").digest()).decode()
            if actual != claimed:
                raise S3ClientError("BadDigest", "The SHA256 you specified did not match the "
                                                 "calculated checksum.")
        return put_object(self)

    def checked_upload_part_copy(self):
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted is not None:
            source = unquote(urlparse(self.headers.get("x-amz-copy-source") or "").path).lstrip("/")
            bucket, _, key = source.partition("/")
            found = self.backend.get_object(bucket, key)
            if found is not None and found.etag.strip('"') != wanted.strip('"'):
                raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")
        return upload_part_copy(self)
    S3Response.put_object = checked_put_object
    S3Response.upload_part_copy = checked_upload_part_copy


def main() -> None:
    from moto.server import main as moto_main
    cheaper_multipart_completion()
    s3_checks()
    with serialized():
        moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
