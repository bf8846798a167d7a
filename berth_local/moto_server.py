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

And a PutObject that carries `x-amz-checksum-sha256` is refused (400 BadDigest) when its body
does not hash to it, as S3 does (https://docs.aws.amazon.com/AmazonS3/latest/userguide/
checking-object-integrity.html); moto 5.2.5 stores the claim unchecked unless
`x-amz-sdk-checksum-algorithm` comes with it, which a presigned upload (`berth proxy`'s pieces,
chalicelib/uploads.py) does not send.

usage: python -m berth_local.moto_server -H 127.0.0.1 -p PORT
"""
import base64
import hashlib
import sys
from typing import Any, Iterator

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


def checked_sha256_uploads() -> None:
    """Install the PutObject checksum check described above (this process only)."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.responses import S3Response
    original = S3Response.put_object

    def put_object(self):
        claimed = self.headers.get("x-amz-checksum-sha256")
        if claimed is not None:
            actual = base64.b64encode(hashlib.sha256(self.body or b"").digest()).decode()
            if actual != claimed:
                raise S3ClientError("BadDigest", "The SHA256 you specified did not match the "
                                                 "calculated checksum.")
        return original(self)
    S3Response.put_object = put_object


def main() -> None:
    from moto.server import main as moto_main
    cheaper_multipart_completion()
    checked_sha256_uploads()
    with serialized():
        moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
