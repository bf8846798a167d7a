"""Creating the table and bucket where no CloudFormation does it (local runs and tests)."""
from __future__ import annotations

from chalicelib.config import settings
from chalicelib.storage import blobstore
from chalicelib.storage.models import TableModel


def ensure_resources() -> None:
    """Create the DynamoDB table and the S3 bucket if they do not exist yet."""
    if not TableModel.exists():
        TableModel.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    s3 = blobstore.client()
    try:
        s3.head_bucket(Bucket=settings().bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=settings().bucket)
