"""Persistence: DynamoDB metadata (models.py, metadata.py) and S3 blob bytes (blobstore.py)."""
