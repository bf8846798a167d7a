"""Deterministic OCI image layouts on disk, for end-to-end tests with real clients.

Every layer is a gzip tar (level 1) holding one directory and one file of incompressible
pseudo-random bytes (a SHAKE-256 stream keyed by the seed), with fixed tar and gzip headers
(mtime 0, uid/gid 0, no file name), and canonical JSON (sorted keys, no spaces) for configs and
manifests. The uncompressed tars (diff_ids) are identical everywhere; the gzip bytes depend on
the zlib build (another deflate implementation may emit other bytes), so tests must take digests
from the returned ImageInfo/IndexInfo, never hardcode them.

Layers are streamed to disk in 1 MiB pieces: memory stays bounded whatever the layer size
(~21 MB peak RSS for a 200 MiB layer, built in ~4.4 s here).

A layout is built in a sibling temporary directory and renamed into place, with a stamp file
(`berth-test-image.json`) recording the parameters; a later call with the same parameters reuses
it (cache: every blob file must still be there with its size), a call with other parameters
rebuilds it. Builders of one dest_dir are serialized with a lock file `.<name>.lock` next to it
(safe with pytest-xdist). A non-empty dest_dir without a stamp is never replaced.

    img = build_image(tmp / "small", layers=[1024, 2048], seed="small")
    skopeo_copy(img.oci_ref, "docker://127.0.0.1:5000/foo:latest")

    idx = build_index(tmp / "multi", platforms=[("linux", "amd64"), ("linux", "arm64")],
                      layers=[1024], seed="multi")
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Descriptor", "ImageInfo", "IndexInfo", "build_image", "build_index",
           "OCI_MANIFEST", "OCI_INDEX", "OCI_CONFIG", "OCI_LAYER_GZIP", "REF_NAME"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

STAMP = "berth-test-image.json"
LAYOUT_VERSION = 1  # bump to invalidate every cached layout when the format changes
CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class ImageInfo:
    """One single-platform image. For an image inside an index, `path` and `tag` are those of the
    whole layout (the tag then names the index, not this manifest)."""
    path: Path
    tag: str
    os: str
    arch: str
    manifest_digest: str
    manifest_size: int
    config_digest: str
    config_size: int
    layer_digests: list[str]
    layer_sizes: list[int]          # compressed (blob) sizes
    diff_ids: list[str]             # sha256 of each uncompressed tar
    payload_sizes: list[int]        # the `layers` parameter: bytes of the file in each layer
    variant: str | None = None

    @property
    def oci_ref(self) -> str:
        """containers/image reference of this layout's tag, e.g. `oci:/tmp/x:latest`."""
        return f"oci:{self.path}:{self.tag}"

    @property
    def blob_digests(self) -> list[str]:
        """Config then layers (what a registry must store for this manifest)."""
        return [self.config_digest, *self.layer_digests]

    @property
    def all_digests(self) -> list[str]:
        """Manifest, config, layers."""
        return [self.manifest_digest, *self.blob_digests]

    @property
    def total_size(self) -> int:
        return self.manifest_size + self.config_size + sum(self.layer_sizes)

    def blob_path(self, digest: str) -> Path:
        return _blob_path(self.path, digest)


@dataclass
class IndexInfo:
    """A multi-platform image: one OCI image index referencing one manifest per platform."""
    path: Path
    tag: str
    index_digest: str
    index_size: int
    images: list[ImageInfo] = field(default_factory=list)

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.path}:{self.tag}"

    @property
    def manifest_digest(self) -> str:   # same name as ImageInfo's, for code handling both
        return self.index_digest

    @property
    def platforms(self) -> list[tuple[str, str]]:
        return [(i.os, i.arch) for i in self.images]

    @property
    def all_digests(self) -> list[str]:
        """Index, then each image's manifest, config and layers."""
        out = [self.index_digest]
        for img in self.images:
            out += img.all_digests
        return out

    def image(self, os_: str, arch: str) -> ImageInfo:
        for img in self.images:
            if (img.os, img.arch) == (os_, arch):
                return img
        raise KeyError(f"{os_}/{arch} not in {self.platforms}")


# ------------------------------------------------------------------------------ internals

def _blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return Path(layout) / "blobs" / algo / hexd


class _HashingWriter:
    """Write-only file-like object that hashes and counts what passes through."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.f.write(b)
        return len(b)

    def flush(self):
        self.f.flush()


def _payload(seed: str, size: int):
    """`size` incompressible bytes, in pieces of at most CHUNK bytes."""
    for i, off in enumerate(range(0, size, CHUNK)):
        yield hashlib.shake_256(f"{seed}:{i}".encode()).digest(min(CHUNK, size - off))


def _tar_header(name: str, size: int, is_dir: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _write_layer(blobdir: Path, filename: str, size: int, seed: str) -> tuple[Descriptor, str]:
    """Stream one gzip tar layer into blobdir; return (descriptor, diff_id)."""
    fd, tmp = tempfile.mkstemp(dir=blobdir, prefix=".layer-")
    with os.fdopen(fd, "wb") as raw:
        blob = _HashingWriter(raw)
        # mtime=0 and no file name in the gzip header: byte-for-byte deterministic
        with gzip.GzipFile(filename="", fileobj=blob, mode="wb", compresslevel=1, mtime=0) as gz:
            tar = _HashingWriter(gz)
            tar.write(_tar_header("berth-test/", 0, is_dir=True))
            tar.write(_tar_header(f"berth-test/{filename}", size))
            for piece in _payload(seed, size):
                tar.write(piece)
            tar.write(b"\0" * ((-size) % 512 + 1024))  # pad the file, then two zero blocks
    digest = "sha256:" + blob.sha.hexdigest()
    os.chmod(tmp, 0o644)
    os.replace(tmp, blobdir / digest[7:])
    return Descriptor(OCI_LAYER_GZIP, digest, blob.size), "sha256:" + tar.sha.hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _write_json_blob(blobdir: Path, obj, media_type: str) -> Descriptor:
    data = _canonical(obj)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobdir / digest[7:]).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def _platform(p) -> tuple[str, str, str | None]:
    if len(p) == 2:
        return p[0], p[1], None
    if len(p) == 3:
        return p[0], p[1], p[2]
    raise ValueError(f"platform must be (os, arch) or (os, arch, variant), got {p!r}")


def _build_manifest(blobdir: Path, layout: Path, tag: str, *, layers, seed, os_, arch,
                    variant=None) -> tuple[ImageInfo, Descriptor]:
    descs, diff_ids = [], []
    for i, size in enumerate(layers):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"layer sizes must be non-negative ints, got {size!r}")
        desc, diff_id = _write_layer(blobdir, f"layer-{i}.bin", size, f"{seed}/{i}")
        descs.append(desc)
        diff_ids.append(diff_id)
    config = {"architecture": arch, "os": os_, "created": "1970-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/true"], "Labels": {"berth.test.seed": seed}},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
                          for i in range(len(layers))]}
    if variant:
        config["variant"] = variant
    cfg = _write_json_blob(blobdir, config, OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg.to_json(),
                "layers": [d.to_json() for d in descs]}
    man = _write_json_blob(blobdir, manifest, OCI_MANIFEST)
    info = ImageInfo(path=layout, tag=tag, os=os_, arch=arch, variant=variant,
                     manifest_digest=man.digest, manifest_size=man.size,
                     config_digest=cfg.digest, config_size=cfg.size,
                     layer_digests=[d.digest for d in descs], layer_sizes=[d.size for d in descs],
                     diff_ids=diff_ids, payload_sizes=list(layers))
    return info, man


def _image_to_json(img: ImageInfo) -> dict:
    d = dict(img.__dict__)
    d["path"] = str(d["path"])
    return d


def _image_from_json(d: dict, path: Path) -> ImageInfo:
    d = dict(d, path=path)
    return ImageInfo(**d)


def _cached(dest: Path, params: dict):
    """The stamp's `info` if dest holds a complete layout built with `params`, else None.
    Checks that every blob file is there with its size (stat only, no re-hashing)."""
    stamp = dest / STAMP
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if data.get("params") != params:
        return None
    info = data["info"]
    images = info["images"] if "images" in info else [info]
    sizes = {}
    for img in images:
        sizes[img["manifest_digest"]] = img["manifest_size"]
        sizes[img["config_digest"]] = img["config_size"]
        sizes.update(zip(img["layer_digests"], img["layer_sizes"]))
    if "index_digest" in info:
        sizes[info["index_digest"]] = info["index_size"]
    for digest, size in sizes.items():
        try:
            if _blob_path(dest, digest).stat().st_size != size:
                return None
        except OSError:
            return None
    return info


@contextmanager
def _locked(dest: Path):
    """Serialize builders of the same dest across processes (e.g. pytest-xdist workers)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(dest: Path, params: dict, writer):
    """Run writer(tmpdir, blobdir, dest) -> (info_json, top_descriptor) in a temp sibling of dest,
    write oci-layout, index.json and the stamp, then move it into place."""
    dest = Path(dest).absolute()
    if dest.exists() and not (dest / STAMP).exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists, is not empty and was not built by {__name__}; "
                              f"refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.building-"))
    try:
        blobdir = tmp / "blobs" / "sha256"
        blobdir.mkdir(parents=True)
        info_json, top = writer(blobdir, dest)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [dict(top.to_json(), annotations={REF_NAME: params["tag"]})]}
        (tmp / "index.json").write_bytes(_canonical(index))
        (tmp / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        (tmp / STAMP).write_text(json.dumps({"params": params, "info": info_json}, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info_json


# ------------------------------------------------------------------------------ public API

def build_image(dest_dir: Path, *, layers: list[int], seed: str, arch: str = "amd64",
                os_: str = "linux", tag: str = "latest", variant: str | None = None) -> ImageInfo:
    """Write (or reuse) an OCI image layout at dest_dir holding one single-platform image tagged
    `tag`, with one gzip tar layer per entry of `layers` (each a file of that many random bytes).
    Layer content depends only on (seed, layer position, size): change the seed to get blobs no
    registry has seen."""
    dest = Path(dest_dir).absolute()
    params = {"version": LAYOUT_VERSION, "kind": "image", "layers": list(layers), "seed": seed,
              "arch": arch, "os": os_, "variant": variant, "tag": tag}
    with _locked(dest):
        info = _cached(dest, params)
        if info is None:
            info = _build(dest, params, lambda blobdir, layout: _image_writer(
                blobdir, layout, tag=tag, layers=layers, seed=seed, os_=os_, arch=arch,
                variant=variant))
    return _image_from_json(info, dest)


def _image_writer(blobdir, layout, *, tag, layers, seed, os_, arch, variant):
    img, man = _build_manifest(blobdir, layout, tag, layers=layers, seed=seed, os_=os_,
                               arch=arch, variant=variant)
    return _image_to_json(img), man


def build_index(dest_dir: Path, *, platforms: list[tuple[str, str]], layers: list[int],
                seed: str, tag: str = "latest") -> IndexInfo:
    """Write (or reuse) an OCI layout at dest_dir holding a multi-platform image: an OCI image
    index (tagged `tag` in index.json) referencing one image manifest per (os, arch) or
    (os, arch, variant) in `platforms`, each descriptor carrying its `platform`. Each platform
    gets its own layers (seed `<seed>/<os>/<arch>[/<variant>]`), all of sizes `layers`."""
    dest = Path(dest_dir).absolute()
    plats = [_platform(p) for p in platforms]
    if not plats:
        raise ValueError("an index needs at least one platform")
    if len(set(plats)) != len(plats):
        raise ValueError(f"duplicate platforms in {platforms!r}")
    params = {"version": LAYOUT_VERSION, "kind": "index", "layers": list(layers), "seed": seed,
              "platforms": [list(p) for p in plats], "tag": tag}

    def writer(blobdir, layout):
        images, entries = [], []
        for os_, arch, variant in plats:
            sub_seed = "/".join(filter(None, (seed, os_, arch, variant)))
            img, man = _build_manifest(blobdir, layout, tag, layers=layers, seed=sub_seed,
                                       os_=os_, arch=arch, variant=variant)
            images.append(_image_to_json(img))
            platform = {"architecture": arch, "os": os_}
            if variant:
                platform["variant"] = variant
            entries.append(dict(man.to_json(), platform=platform))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        idx = _write_json_blob(blobdir, index, OCI_INDEX)
        return {"index_digest": idx.digest, "index_size": idx.size, "images": images}, idx

    with _locked(dest):
        info = _cached(dest, params)
        if info is None:
            info = _build(dest, params, writer)
    return IndexInfo(path=dest, tag=tag, index_digest=info["index_digest"],
                     index_size=info["index_size"],
                     images=[_image_from_json(i, dest) for i in info["images"]])
