"""The OCI grammar and vocabulary: names, tags, digests and media types.

This is the one place these rules live; every other module imports them from here.
"""
from __future__ import annotations

import hashlib
import re
from typing import Tuple

from chalicelib.errors import RegistryError

# distribution-spec: <name> path components, joined by "/".
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
NAME_MAX = 255
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# image-spec descriptor.md: algorithm ":" encoded; only registered algorithms are supported.
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
ALGORITHMS = {"sha256": 64, "sha512": 128}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = IMAGE_MANIFEST_TYPES | INDEX_TYPES
# Layers that registries do not store (they carry "urls" to fetch them elsewhere).
NONDISTRIBUTABLE_LAYER_TYPES = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Berth's extension of chunked uploads (chalicelib/uploads.py), used by `berth proxy` and
# advertised on every upload session answer: a PATCH with `Berth-Upload-Chunk: ahead` stores a
# chunk that starts after the bytes received so far, for later; one with `join` is an ordinary
# in-order chunk that also takes in the chunk stored ahead at its end. Other clients send neither
# and keep distribution-spec's behaviour (an out-of-order chunk answers 416).
UPLOAD_CHUNK_HEADER = "Berth-Upload-Chunk"
CHUNK_AHEAD, CHUNK_JOIN = "ahead", "join"
# Berth's second extension, for clients that can reach the blob store themselves (`berth proxy`),
# advertised as `Berth-Upload-Piece: s3` on every upload session answer: a piece of the upload
# goes straight to S3 instead of through API Gateway and Lambda (no 6 MB limit, no base64).
#   PATCH <session> with no body and `Berth-Upload-Piece: url; start=S; length=N; sha256=HEX`
#     answers 202 with `Berth-Piece-Url`: a presigned S3 PUT, valid PIECE_URL_SECONDS, that takes
#     exactly N bytes sent with `x-amz-checksum-sha256: base64(HEX)` (S3 refuses other bytes);
#   PATCH <session> with no body and `Berth-Upload-Piece: stored; start=S; length=N; sha256=HEX`
#     takes the uploaded piece in at offset S (which must be the bytes received so far, or 416):
#     the registry reads it once, hashes it in order and makes it a part of the upload.
# Nothing is visible before the commit verified the digest, as for every other chunk.
UPLOAD_PIECE_HEADER = "Berth-Upload-Piece"
PIECE_S3, PIECE_URL, PIECE_STORED = "s3", "url", "stored"
PIECE_URL_HEADER = "Berth-Piece-Url"


def is_valid_name(name: str) -> bool:
    return len(name) <= NAME_MAX and bool(NAME_RE.match(name))


def check_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NAME_INVALID."""
    if not is_valid_name(name):
        raise RegistryError("NAME_INVALID", f"invalid repository name: {name[:300]!r}",
                            detail={"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag: {tag[:200]!r}", detail={"tag": tag[:200]})
    return tag


def check_algorithm(algorithm: str) -> str:
    """A supported digest algorithm (e.g. a POST's `digest-algorithm`), or DIGEST_INVALID."""
    if algorithm not in ALGORITHMS:
        raise RegistryError("DIGEST_INVALID", f"unsupported digest algorithm: {algorithm[:50]}",
                            detail={"supported": sorted(ALGORITHMS)})
    return algorithm


def parse_digest(digest: str) -> Tuple[str, str]:
    """Split a digest into (algorithm, hex), raising DIGEST_INVALID for anything unsupported."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise RegistryError("DIGEST_INVALID", f"invalid digest: {str(digest)[:200]!r}")
    algorithm, encoded = digest.split(":", 1)
    length = ALGORITHMS[check_algorithm(algorithm)]
    if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise RegistryError("DIGEST_INVALID", f"invalid {algorithm} digest: {digest[:200]!r}")
    return algorithm, encoded


def check_digest(digest: str) -> str:
    parse_digest(digest)
    return digest


def looks_like_digest(reference: str) -> bool:
    """A manifest reference is a digest when it has a colon (tags cannot contain one)."""
    return ":" in reference


def new_hasher(algorithm: str = "sha256"):
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


# Users and namespaces: a namespace is the first component of a repository name.
NAMESPACE_RE = re.compile(rf"^{_COMPONENT}$")
NAMESPACE_MAX = 64
USERNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


def namespace_of(repository: str) -> str:
    return repository.split("/", 1)[0]


def is_valid_namespace(namespace: str) -> bool:
    return len(namespace) <= NAMESPACE_MAX and bool(NAMESPACE_RE.match(namespace))


def is_valid_username(username: str) -> bool:
    return bool(USERNAME_RE.match(username))
