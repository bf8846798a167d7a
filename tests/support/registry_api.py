"""Small helpers that speak the registry API with requests, for the API tests."""
from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Dict, Optional, Tuple

import requests

ADMIN = ("admin", "admin-test-password")   # created by tests/conftest.py


class RegistryClient:
    """`requests` with docker's token dance done up front: before a request to a repository it
    fetches (once) a token for pull, push and delete on it with its credentials, so that bodies
    never need to be sent twice. Its methods mirror requests' (get, put, ...)."""

    _REPOSITORY = re.compile(r"^/v2/(.+)/(?:manifests|blobs|tags|referrers)/")

    def __init__(self, credentials: Optional[Tuple[str, str]] = ADMIN) -> None:
        self.credentials = credentials
        self._tokens: Dict[Tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def scopes_of(self, path: str, params: Optional[dict]) -> Tuple[str, ...]:
        if path.startswith("/v2/_catalog"):
            return ("registry:catalog:*",)
        m = self._REPOSITORY.match(path)
        scopes = (f"repository:{m.group(1)}:pull,push,delete",) if m else ()
        if params and params.get("from"):        # a cross-repository mount reads the source
            scopes += (f"repository:{params['from']}:pull",)
        return scopes

    def token(self, base: str, scope: Tuple[str, ...]) -> str:
        with self._lock:
            cached = self._tokens.get((base, scope))
        if cached:
            return cached
        params = {"service": "berth", "scope": list(scope)}
        r = requests.get(f"{base}/v2/_berth/token", params=params, auth=self.credentials)
        assert r.status_code == 200, r.text
        with self._lock:
            self._tokens[(base, scope)] = r.json()["token"]
        return r.json()["token"]

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        m = re.match(r"^(https?://[^/]+)(/[^?]*)", url)
        headers = dict(kwargs.pop("headers", None) or {})
        if m and m.group(2).startswith("/v2"):
            headers.setdefault("Authorization",
                               "Bearer " + self.token(m.group(1), self.scopes_of(
                                   m.group(2), kwargs.get("params"))))
        return requests.request(method, url, headers=headers, **kwargs)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def head(self, url, **kw):
        kw.setdefault("allow_redirects", False)
        return self.request("HEAD", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def patch(self, url, **kw):
        return self.request("PATCH", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)


http = RegistryClient()   # the admin: may do anything anywhere


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


def push_blob(base: str, repo: str, data: bytes, client: Optional[RegistryClient] = None) -> str:
    """Upload `data` as one blob with POST + PUT ?digest= and return its digest."""
    client = client or http
    digest = sha256(data)
    r = client.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = client.put(absolute(base, r.headers["Location"]), params={"digest": digest}, data=data)
    assert r.status_code == 201, r.text
    return digest


def start_upload(base: str, repo: str) -> str:
    """POST an upload session; its absolute URL (checked: 202, nothing received yet)."""
    r = http.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-0"
    assert r.headers["Docker-Upload-UUID"] in r.headers["Location"]
    return absolute(base, r.headers["Location"])


def pull_blob(base: str, repo: str, digest: str) -> bytes:
    """A blob's bytes, through the registry's 307 to S3 (checked)."""
    r = http.get(f"{base}/v2/{repo}/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 307, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    return http.get(r.headers["Location"]).content


def push_in_one_patch(base: str, repo: str, data: bytes, client: RegistryClient) -> None:
    """POST, one PATCH streaming `data` in two writes (as a client with a whole layer), PUT
    ?digest=; checks that every byte arrived and the blob was created."""
    location = client.post(f"{base}/v2/{repo}/blobs/uploads/").headers["Location"]
    patched = client.patch(absolute(base, location), data=iter([data[:5 << 20], data[5 << 20:]]))
    assert patched.status_code == 202, patched.text
    assert patched.headers["Range"] == f"0-{len(data) - 1}"
    done = client.put(absolute(base, patched.headers["Location"]), params={"digest": sha256(data)})
    assert done.status_code == 201, done.text


def image_manifest(config_digest: str, config_size: int, layers, **extra) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": config_digest, "size": config_size},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": d, "size": s} for d, s in layers]}
    doc.update(extra)
    return json.dumps(doc, indent=1).encode()


def push_image(base: str, repo: str, tag: str, layer_bytes=(b"layer-one", b"layer-two"),
               config: bytes = b'{"architecture":"amd64","os":"linux"}',
               client: Optional[RegistryClient] = None, **extra) -> str:
    """Push a small OCI image; return its manifest digest."""
    client = client or http
    config_digest = push_blob(base, repo, config, client)
    layers = [(push_blob(base, repo, b, client), len(b)) for b in layer_bytes]
    body = image_manifest(config_digest, len(config), layers, **extra)
    r = client.put(f"{base}/v2/{repo}/manifests/{tag}", data=body,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def error_code(response) -> str:
    return response.json()["errors"][0]["code"]


def forget_hash_state(upload_url: str) -> None:
    """Remove an upload session's saved SHA-256 state, as for a session that has none (the
    commit must then read the blob back from S3)."""
    from chalicelib.storage.models import UPLOADS_PK, UploadItem
    upload_id = upload_url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]
    UploadItem(UPLOADS_PK, upload_id).update(actions=[UploadItem.hash_state.remove()])
