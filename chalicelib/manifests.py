"""Manifest parsing and validation: what makes a manifest PUT acceptable (image-spec rules)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from chalicelib import jsondoc, oci
from chalicelib.errors import RegistryError
from chalicelib.storage.metadata import ManifestRecord, missing_blobs, missing_manifests


def _invalid(message: str, **detail: Any) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", message, detail=detail or None)


def _descriptor(value: Any, where: str) -> Dict[str, Any]:
    """Check one descriptor's required fields (mediaType, digest, size)."""
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is missing")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest is missing")
    try:
        oci.parse_digest(digest)
    except RegistryError:
        raise _invalid(f"{where}.digest is not a valid digest", digest=digest[:200]) from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size must be a non-negative integer")
    return value


def _descriptors(doc: Dict[str, Any], key: str, required: bool) -> List[Dict[str, Any]]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{key} must be a list of descriptors")
    return [_descriptor(d, f"{key}[{i}]") for i, d in enumerate(value)]


def _media_type(doc: Dict[str, Any], content_type: Optional[str]) -> str:
    """The manifest's media type: its mediaType field, which must agree with Content-Type."""
    declared = doc.get("mediaType")
    header = (content_type or "").split(";")[0].strip() or None
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    if declared and header and declared != header:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {header!r}")
    media_type = declared or header
    if media_type not in oci.MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type {media_type!r}",
                       supported=sorted(oci.MANIFEST_TYPES))
    return media_type


def parse(body: bytes, content_type: Optional[str], digest: str) -> ManifestRecord:
    """Validate a manifest's bytes and extract what the registry must store and check."""
    if len(body) > oci.MANIFEST_MAX_BYTES:
        raise RegistryError("SIZE_INVALID", f"manifest is {len(body)} bytes; the limit is "
                            f"{oci.MANIFEST_MAX_BYTES}", status=413)
    try:
        doc = jsondoc.loads(body)
    except jsondoc.InvalidJSON as exc:
        raise _invalid(f"manifest is {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    media_type = _media_type(doc, content_type)
    record = ManifestRecord(digest=digest, media_type=media_type, body=body)
    if media_type in oci.INDEX_TYPES:
        record.children = [d["digest"] for d in _descriptors(doc, "manifests", required=True)]
        record.artifact_type = doc.get("artifactType")
    else:
        config = _descriptor(doc.get("config"), "config")
        layers = _descriptors(doc, "layers", required=True)
        record.blobs = [config["digest"]] + [
            d["digest"] for d in layers if d["mediaType"] not in oci.NONDISTRIBUTABLE_LAYER_TYPES]
        record.artifact_type = doc.get("artifactType") or config["mediaType"]
    if "subject" in doc:
        record.subject = _descriptor(doc["subject"], "subject")["digest"]
    annotations = doc.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise _invalid("annotations must be an object")
    record.annotations = annotations
    if record.artifact_type is not None and not isinstance(record.artifact_type, str):
        raise _invalid("artifactType must be a string")
    record.blobs = list(dict.fromkeys(record.blobs))
    record.children = list(dict.fromkeys(record.children))
    return record


def check_references(repo: str, record: ManifestRecord) -> None:
    """Everything a manifest references must already be in `repo` (spec: push blobs first)."""
    missing = missing_blobs(repo, record.blobs)
    if missing:
        raise RegistryError("MANIFEST_BLOB_UNKNOWN", "the manifest references blobs that are not "
                            "in this repository: push them first",
                            detail={"digests": sorted(missing)})
    missing = missing_manifests(repo, record.children)
    if missing:
        raise RegistryError("MANIFEST_UNKNOWN", "the index references manifests that are not in "
                            "this repository: push them first", detail={"digests": sorted(missing)},
                            status=400)
