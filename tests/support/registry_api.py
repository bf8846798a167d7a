"""Small helpers that speak the registry API with requests, for the API tests."""
from __future__ import annotations

import hashlib
import json

import requests


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


def push_blob(base: str, repo: str, data: bytes) -> str:
    """Upload `data` as one blob with POST + PUT ?digest= and return its digest."""
    digest = sha256(data)
    r = requests.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = requests.put(absolute(base, r.headers["Location"]), params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    return digest


def image_manifest(config_digest: str, config_size: int, layers, **extra) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": config_digest, "size": config_size},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": d, "size": s} for d, s in layers]}
    doc.update(extra)
    return json.dumps(doc, indent=1).encode()


def push_image(base: str, repo: str, tag: str, layer_bytes=(b"layer-one", b"layer-two"),
               config: bytes = b'{"architecture":"amd64","os":"linux"}', **extra) -> str:
    """Push a small OCI image; return its manifest digest."""
    config_digest = push_blob(base, repo, config)
    layers = [(push_blob(base, repo, b), len(b)) for b in layer_bytes]
    body = image_manifest(config_digest, len(config), layers, **extra)
    r = requests.put(f"{base}/v2/{repo}/manifests/{tag}", data=body,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def error_code(response) -> str:
    return response.json()["errors"][0]["code"]
