"""The local moto server (`make run`'s AWS): its cheaper multipart completion answers exactly as
moto's own (berth_local/moto_server.py)."""
from __future__ import annotations

import hashlib
import os

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from berth_local import backend

MiB = 1 << 20


@pytest.fixture(scope="module")
def s3():
    endpoint, moto = backend.start_moto_process(0)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(signature_version="s3v4"))
    client.create_bucket(Bucket="berth-moto-test")
    yield client
    moto.terminate()
    moto.wait(timeout=10)


def upload(s3, key: str, parts: list[bytes]) -> tuple[str, list[dict]]:
    mpu = s3.create_multipart_upload(Bucket="berth-moto-test", Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket="berth-moto-test", Key=key, UploadId=mpu, PartNumber=n,
                                                     Body=data)["ETag"]}
            for n, data in enumerate(parts, 1)]
    return mpu, done


def test_a_completed_upload_is_the_parts_in_order_with_s3s_etag(s3):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 3), os.urandom(1234)]
    mpu, done = upload(s3, "k", parts)
    answer = s3.complete_multipart_upload(Bucket="berth-moto-test", Key="k", UploadId=mpu, MultipartUpload={"Parts": done})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert answer["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    got = s3.get_object(Bucket="berth-moto-test", Key="k")
    assert got["Body"].read() == b"".join(parts)
    assert got["ContentLength"] == sum(map(len, parts)) and got["ETag"] == answer["ETag"]
    assert s3.get_object(Bucket="berth-moto-test", Key="k", Range="bytes=5242878-5242881")["Body"].read() == \
        b"".join(parts)[5242878:5242882]
    with pytest.raises(ClientError) as gone:     # the upload is finished
        s3.list_parts(Bucket="berth-moto-test", Key="k", UploadId=mpu)
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"


@pytest.mark.parametrize("case, code", [("small part before the last", "EntityTooSmall"),
                                        ("wrong etag", "InvalidPart"),
                                        ("unknown part", "InvalidPart")])
def test_completion_errors_are_moto_s3s(s3, case, code):
    parts = [os.urandom(1 * MiB), os.urandom(10)] if case.startswith("small") else [os.urandom(5 * MiB), os.urandom(10)]
    mpu, done = upload(s3, "e", parts)
    if case == "wrong etag":
        done[1]["ETag"] = '"' + "0" * 32 + '"'
    if case == "unknown part":
        done.append({"PartNumber": 7, "ETag": done[0]["ETag"]})
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(Bucket="berth-moto-test", Key="e", UploadId=mpu, MultipartUpload={"Parts": done})
    assert refused.value.response["Error"]["Code"] == code
    s3.abort_multipart_upload(Bucket="berth-moto-test", Key="e", UploadId=mpu)


def test_a_put_whose_body_does_not_match_its_sha256_checksum_is_refused_as_s3_does(s3):
    """berth proxy's pieces are presigned with their SHA-256: S3 refuses other bytes (BadDigest)."""
    import base64
    import requests
    body = os.urandom(1000)
    claimed = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "berth-moto-test", "Key": "sum",
                                                          "ChecksumSHA256": claimed})
    refused = requests.put(url, data=body, headers={"x-amz-checksum-sha256": claimed})
    assert refused.status_code == 400 and "<Code>BadDigest</Code>" in refused.text
    with pytest.raises(ClientError):
        s3.head_object(Bucket="berth-moto-test", Key="sum")
    right = base64.b64encode(hashlib.sha256(body).digest()).decode()
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "berth-moto-test", "Key": "sum",
                                                          "ChecksumSHA256": right})
    assert requests.put(url, data=body, headers={"x-amz-checksum-sha256": right}).status_code == 200
    assert s3.get_object(Bucket="berth-moto-test", Key="sum")["Body"].read() == body


def test_a_part_copy_whose_source_changed_is_refused_as_s3_does(s3):
    s3.put_object(Bucket="berth-moto-test", Key="src", Body=os.urandom(5 * MiB))
    etag = s3.head_object(Bucket="berth-moto-test", Key="src")["ETag"]
    mpu = s3.create_multipart_upload(Bucket="berth-moto-test", Key="dst")["UploadId"]
    copy = dict(Bucket="berth-moto-test", Key="dst", UploadId=mpu, PartNumber=1,
                CopySource={"Bucket": "berth-moto-test", "Key": "src"})
    assert s3.upload_part_copy(CopySourceIfMatch=etag, **copy)["CopyPartResult"]["ETag"]
    s3.put_object(Bucket="berth-moto-test", Key="src", Body=os.urandom(5 * MiB))
    with pytest.raises(ClientError) as refused:
        s3.upload_part_copy(CopySourceIfMatch=etag, **copy)
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"


@pytest.fixture(scope="module")
def dynamodb(s3):
    client = boto3.client("dynamodb", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_table(TableName="berth-moto-query", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    for pk in ("a", "b", "c"):
        for n in (3, 1, 4, 0, 2):
            client.put_item(TableName="berth-moto-query",
                            Item={"pk": {"S": pk}, "sk": {"S": f"s{n}"}, "v": {"N": str(n)}})
    return client


def query_pages(dynamodb, forward: bool = True, **condition) -> list[list[str]]:
    pages, start = [], {}
    while True:
        page = dynamodb.query(TableName="berth-moto-query", Limit=2, ScanIndexForward=forward,
                              **condition, **start)
        pages.append([f"{i['pk']['S']}/{i['sk']['S']}" for i in page["Items"]])
        if "LastEvaluatedKey" not in page:
            return pages
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def test_a_query_reads_its_partition_in_key_order_and_pages_as_dynamodb_does(dynamodb):
    """moto's Query is patched to read only its partition (berth_local/moto_dynamodb.py): the
    answers stay DynamoDB's: that partition only, sorted by sort key, in pages."""
    b = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "b"}}}
    assert query_pages(dynamodb, **b) == [["b/s0", "b/s1"], ["b/s2", "b/s3"], ["b/s4"]]
    assert query_pages(dynamodb, forward=False, **b) == [["b/s4", "b/s3"], ["b/s2", "b/s1"],
                                                         ["b/s0"]]
    above = {"KeyConditionExpression": "pk = :p AND sk > :s",
             "ExpressionAttributeValues": {":p": {"S": "c"}, ":s": {"S": "s2"}}}
    assert query_pages(dynamodb, **above) == [["c/s3", "c/s4"]]
    none = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "z"}}}
    assert query_pages(dynamodb, **none) == [[]]
    scanned = dynamodb.scan(TableName="berth-moto-query")["Items"]
    assert len(scanned) == 15     # a Scan still reads every partition
