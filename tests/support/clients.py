"""Thin wrappers around the real container CLIs (skopeo, podman) for end-to-end tests.

Every call runs with a private, throwaway containers configuration, so nothing depends on, or
writes to, /etc/containers, /var/lib/containers or /run/containers:
  - CONTAINERS_REGISTRIES_CONF -> a registries.conf with no unqualified-search registries (no
    short-name prompts; use fully qualified references such as 127.0.0.1:PORT/repo:tag),
  - a policy.json accepting anything (skopeo: --insecure-policy; podman: --signature-policy),
  - REGISTRY_AUTH_FILE -> an empty auth file (no stray logins), credentials only via `creds=`,
  - the containers/image blob-info cache (which remembers where blobs were seen, and which
    compressed blob matches which uncompressed one, and makes later copies HEAD/mount instead of
    upload) -> a private directory: as root it would be the shared /var/lib/containers/cache.
    This works by setting `_CONTAINERS_ROOTLESS_UID` (to a non-zero uid) and XDG_DATA_HOME:
    containers/image then keeps the cache under $XDG_DATA_HOME/containers/cache, while the
    process still runs as root (podman's IsRootless() only looks at the euid and
    _CONTAINERS_USERNS_CONFIGURED, so podman keeps acting as root).

Plain HTTP: registries under test listen on plain HTTP on 127.0.0.1. Every docker:// side gets
--tls-verify=false (skopeo: --src-/--dest-tls-verify=false): containers/image then still tries
HTTPS first and falls back to HTTP. Without it the command fails with "http: server gave HTTP
response to HTTPS client" (127.0.0.1 is not treated as insecure by default).

Failures raise ClientError carrying the command, exit status, stdout and stderr.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["ClientError", "CopyResult", "PushResult", "ImageIdentity", "ContainersEnv", "Podman",
           "skopeo_copy", "skopeo_inspect", "skopeo_inspect_raw", "skopeo_delete",
           "skopeo_list_tags", "image_identity", "layout_digests", "have_skopeo", "have_podman",
           "skopeo_version", "podman_version"]

DEFAULT_TIMEOUT = 900  # seconds, for one CLI call
_ROOTLESS_UID_HACK = "4242"


class ClientError(RuntimeError):
    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 note: str = ""):
        self.cmd, self.returncode, self.stdout, self.stderr = list(cmd), returncode, stdout, stderr
        what = f"timed out ({note})" if returncode is None else f"exited with status {returncode}"
        super().__init__(f"{' '.join(map(str, cmd))} {what}\n--- stderr:\n{stderr[-4000:]}"
                         + (f"\n--- stdout:\n{stdout[-2000:]}" if stdout.strip() else ""))


def _run(cmd: Sequence[str], *, env: dict | None = None, timeout: float = DEFAULT_TIMEOUT,
         binary_stdout: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ClientError(cmd, None, (e.stdout or b"").decode(errors="replace"),
                          (e.stderr or b"").decode(errors="replace"), f"{timeout}s") from None
    stderr = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise ClientError(cmd, p.returncode, p.stdout.decode(errors="replace"), stderr)
    if not binary_stdout:
        p.stdout = p.stdout.decode(errors="replace")
    p.stderr = stderr
    return p


# ------------------------------------------------------------------------------ availability

def have_skopeo() -> bool:
    return shutil.which("skopeo") is not None


def have_podman() -> bool:
    return shutil.which("podman") is not None


def _version(tool: str) -> tuple[int, ...] | None:
    if not shutil.which(tool):
        return None
    out = subprocess.run([tool, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


@functools.lru_cache(None)
def skopeo_version() -> tuple[int, ...] | None:
    return _version("skopeo")


@functools.lru_cache(None)
def podman_version() -> tuple[int, ...] | None:
    return _version("podman")


@functools.lru_cache(None)
def _skopeo_supports(subcommand: str, flag: str) -> bool:
    p = subprocess.run(["skopeo", subcommand, "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    return flag in p.stdout


# ------------------------------------------------------------------------------ private config

class ContainersEnv:
    """A directory with registries.conf, policy.json, an empty auth file and a blob-info cache
    home, and the environment that makes containers/image tools use them."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registries_conf = self.dir / "registries.conf"
        self.policy = self.dir / "policy.json"
        self.auth_file = self.dir / "auth.json"
        self.data_home = self.dir / "xdg-data"      # blob-info cache lives below this
        self.tmp = self.dir / "tmp"
        for d in (self.data_home, self.tmp):
            d.mkdir(exist_ok=True)
        if not self.registries_conf.exists():
            # no search registries: a short name fails fast instead of prompting
            self.registries_conf.write_text('unqualified-search-registries = []\n'
                                            'short-name-mode = "enforcing"\n')
        if not self.policy.exists():
            self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        if not self.auth_file.exists():
            self.auth_file.write_text('{"auths": {}}')

    @property
    def blob_info_cache(self) -> Path:
        return self.data_home / "containers" / "cache" / "blob-info-cache-v1.boltdb"

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF",
                  "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "_CONTAINERS_USERNS_CONFIGURED"):
            env.pop(k, None)
        env.update(CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
                   REGISTRY_AUTH_FILE=str(self.auth_file),
                   _CONTAINERS_ROOTLESS_UID=_ROOTLESS_UID_HACK,
                   XDG_DATA_HOME=str(self.data_home),
                   TMPDIR=str(self.tmp))
        env.update({k: str(v) for k, v in extra.items()})
        return env


@contextmanager
def _skopeo_env(cache_dir: Path | None):
    """cache_dir None: a fresh configuration (and empty blob-info cache) for this call only;
    else a persistent one, so that later calls remember earlier ones (cross-repo mounts...)."""
    if cache_dir is not None:
        yield ContainersEnv(Path(cache_dir))
        return
    d = tempfile.mkdtemp(prefix="berth-skopeo-")
    try:
        yield ContainersEnv(Path(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _is_registry(ref: str) -> bool:
    return ref.startswith("docker://")


# ------------------------------------------------------------------------------ skopeo

@dataclass
class CopyResult:
    digest: str | None      # digest of the manifest (or index, with all_images) written at dst
    seconds: float
    stdout: str
    stderr: str


def skopeo_copy(src: str, dst: str, *, all_images: bool = False, creds: str | None = None,
                src_creds: str | None = None, dest_creds: str | None = None,
                extra: Iterable[str] = (), cache_dir: Path | None = None,
                tls_verify: bool = False, timeout: float = DEFAULT_TIMEOUT) -> CopyResult:
    """`skopeo copy src dst` (refs with their transport: docker://, oci:, dir: ...).
    creds ("user:password") applies to every docker:// side; src_creds/dest_creds to one.
    --retry-times 0 (no silent retries: a failure shows at once). The written manifest digest
    comes from --digestfile. See _skopeo_env for cache_dir."""
    cmd = ["skopeo", "--insecure-policy", "copy"]
    if _skopeo_supports("copy", "--retry-times"):
        cmd += ["--retry-times", "0"]
    if all_images:
        cmd.append("--all")
    for side, ref, side_creds in (("src", src, src_creds), ("dest", dst, dest_creds)):
        if _is_registry(ref):
            cmd.append(f"--{side}-tls-verify={'true' if tls_verify else 'false'}")
            if side_creds or creds:
                cmd.append(f"--{side}-creds={side_creds or creds}")
    with _skopeo_env(cache_dir) as cenv:
        digestfile = cenv.tmp / f"digest-{os.getpid()}-{time.monotonic_ns()}"
        cmd += ["--digestfile", str(digestfile), *extra, src, dst]
        t0 = time.perf_counter()
        p = _run(cmd, env=cenv.env(), timeout=timeout)
        dt = time.perf_counter() - t0
        digest = digestfile.read_text().strip() if digestfile.exists() else None
        digestfile.unlink(missing_ok=True)
    return CopyResult(digest or None, dt, p.stdout, p.stderr)


def _ref_flags(subcommand: str, ref: str, creds: str | None, tls_verify: bool) -> list[str]:
    flags = []
    if _skopeo_supports(subcommand, "--retry-times"):
        flags += ["--retry-times", "0"]
    if _is_registry(ref):
        flags.append(f"--tls-verify={'true' if tls_verify else 'false'}")
        if creds:
            flags.append(f"--creds={creds}")
    return flags


def skopeo_inspect_raw(ref: str, *, config: bool = False, creds: str | None = None,
                       tls_verify: bool = False, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The exact bytes of the manifest (or, with config=True, of the config blob) at ref:
    sha256 of them is the manifest's digest."""
    cmd = ["skopeo", "--insecure-policy", "inspect", "--raw",
           *_ref_flags("inspect", ref, creds, tls_verify)]
    if config:
        cmd.append("--config")
    with _skopeo_env(None) as cenv:
        return _run(cmd + [ref], env=cenv.env(), timeout=timeout, binary_stdout=True).stdout


def skopeo_inspect(ref: str, raw: bool = False, creds: str | None = None, *,
                   config: bool = False, tls_verify: bool = False,
                   timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Parsed `skopeo inspect [--raw] [--config] ref`. Without raw: skopeo's summary (Digest,
    Layers, Architecture...); on an index it describes the image for this machine's platform.
    With raw: the manifest/index as stored (use skopeo_inspect_raw for its bytes)."""
    if raw or config:
        return json.loads(skopeo_inspect_raw(ref, config=config, creds=creds,
                                             tls_verify=tls_verify, timeout=timeout))
    cmd = ["skopeo", "--insecure-policy", "inspect", *_ref_flags("inspect", ref, creds, tls_verify)]
    with _skopeo_env(None) as cenv:
        return json.loads(_run(cmd + [ref], env=cenv.env(), timeout=timeout).stdout)


def skopeo_delete(ref: str, *, creds: str | None = None, tls_verify: bool = False,
                  timeout: float = DEFAULT_TIMEOUT) -> None:
    """`skopeo delete docker://host/repo:tag|@digest`: deletes the MANIFEST the reference
    resolves to (by digest: every tag pointing at it goes too)."""
    cmd = ["skopeo", "--insecure-policy", "delete", *_ref_flags("delete", ref, creds, tls_verify)]
    with _skopeo_env(None) as cenv:
        _run(cmd + [ref], env=cenv.env(), timeout=timeout)


def skopeo_list_tags(ref: str, *, creds: str | None = None, tls_verify: bool = False,
                     timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Tags of docker://host/repo (list-tags follows the Link pagination)."""
    cmd = ["skopeo", "--insecure-policy", "list-tags", *_ref_flags("list-tags", ref, creds,
                                                                   tls_verify)]
    with _skopeo_env(None) as cenv:
        return json.loads(_run(cmd + [ref], env=cenv.env(), timeout=timeout).stdout)["Tags"]


# ------------------------------------------------------------------------------ comparing images

@dataclass(frozen=True)
class ImageIdentity:
    """What identifies one single-platform image, wherever it is.
    - manifest_digest: changes whenever a layer is recompressed or the manifest re-serialized
      (every podman push from local storage);
    - config_digest (== podman's image ID) and diff_ids (sha256 of the UNCOMPRESSED layers):
      survive podman push/pull, and skopeo copies, unchanged as long as the manifest format
      is kept (a conversion to Docker v2s2 with --format rewrites the config)."""
    manifest_digest: str | None
    config_digest: str
    diff_ids: tuple[str, ...]
    os: str | None = None
    arch: str | None = None

    def content(self) -> tuple:
        """The part that a re-push through podman keeps: compare these across clients."""
        return (self.config_digest, self.diff_ids, self.os, self.arch)


def image_identity(ref: str, *, creds: str | None = None, tls_verify: bool = False
                   ) -> ImageIdentity:
    """ImageIdentity of a single-platform image at any skopeo ref (docker://, oci:...)."""
    raw = skopeo_inspect_raw(ref, creds=creds, tls_verify=tls_verify)
    manifest = json.loads(raw)
    if "config" not in manifest:
        raise ValueError(f"{ref} is not a single image manifest "
                         f"(mediaType {manifest.get('mediaType')}); inspect a child by digest")
    config = json.loads(skopeo_inspect_raw(ref, config=True, creds=creds, tls_verify=tls_verify))
    return ImageIdentity("sha256:" + hashlib.sha256(raw).hexdigest(),
                         manifest["config"]["digest"], tuple(config["rootfs"]["diff_ids"]),
                         config.get("os"), config.get("architecture"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return "sha256:" + h.hexdigest()


def layout_digests(path: Path, tag: str | None = None, *, verify: bool = True) -> dict:
    """Digests in an OCI layout (e.g. after `skopeo copy docker://... oci:PATH:TAG`).

    Returns {"manifest_digest", "media_type", "config_digest", "layer_digests", "blobs",
    "children"}: for an image manifest, config and layers are filled and children is {}; for an
    index, config_digest is None, layer_digests [] and children maps each child manifest digest
    to the same structure. "blobs" is every digest reachable from the top manifest (child
    manifests, configs, layers), excluding the top manifest itself, sorted.
    `tag` picks the index.json entry by its ref.name annotation (default: the only entry).
    verify=True re-hashes every reachable blob file (streamed) and checks sizes."""
    path = Path(path)
    index = json.loads((path / "index.json").read_text())
    entries = index.get("manifests", [])
    if tag is not None:
        entries = [m for m in entries
                   if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(entries) != 1:
        raise ValueError(f"{path}/index.json: expected one entry for tag {tag!r}, "
                         f"found {len(entries)}")

    def blob(desc) -> bytes:
        p = path / "blobs" / desc["digest"].replace(":", "/", 1)
        if verify:
            size = p.stat().st_size
            if size != desc["size"]:
                raise ValueError(f"{p}: size {size}, descriptor says {desc['size']}")
            got = _sha256_file(p)
            if got != desc["digest"]:
                raise ValueError(f"{p}: content hashes to {got}")
        return p

    def walk(desc) -> dict:
        data = json.loads(Path(blob(desc)).read_bytes())
        mt = data.get("mediaType") or desc.get("mediaType")
        out = {"manifest_digest": desc["digest"], "media_type": mt, "config_digest": None,
               "layer_digests": [], "children": {}, "blobs": []}
        if "manifests" in data:
            for child in data["manifests"]:
                sub = walk(child)
                out["children"][child["digest"]] = sub
                out["blobs"] += [child["digest"], *sub["blobs"]]
        else:
            blob(data["config"])
            for layer in data.get("layers", []):
                blob(layer)
            out["config_digest"] = data["config"]["digest"]
            out["layer_digests"] = [d["digest"] for d in data.get("layers", [])]
            out["blobs"] = [out["config_digest"], *out["layer_digests"]]
        out["blobs"] = sorted(set(out["blobs"]))
        return out

    return walk(entries[0])


# ------------------------------------------------------------------------------ podman

@dataclass
class PushResult:
    digest: str             # manifest digest as written to the registry (podman --digestfile)
    seconds: float
    stdout: str
    stderr: str


class Podman:
    """podman as root with a private, throwaway everything, and no system service:

        podman --root W/root --runroot /tmp/berth-pm-XXXX --storage-driver vfs
               --cgroup-manager cgroupfs --events-backend file --tmpdir W/libpod-tmp
               --network-config-dir W/networks --volumepath W/volumes  <command>
        env: CONTAINERS_CONF=W/containers.conf (cgroupfs, file events, tmp dirs, and
             network_backend="cni": the default netavark backend creates /run/containers/networks
             for root on every command), CONTAINERS_STORAGE_CONF=W/storage.conf,
             CONTAINERS_REGISTRIES_CONF, REGISTRY_AUTH_FILE, XDG_DATA_HOME +
             _CONTAINERS_ROOTLESS_UID (blob-info cache, see the module doc), TMPDIR.
        pull/push: --signature-policy W/policy.json, --tls-verify=false for registries.

    What a push does to digests: podman keeps layers UNCOMPRESSED in local storage, so
    `podman push` compresses every layer again on the fly (sent as Transfer-Encoding: chunked,
    size unknown in advance). The pushed layer digests, sizes and the manifest digest therefore
    differ from the OCI layout that was loaded; `podman image inspect` still reports the
    ORIGINAL manifest digest, not the pushed one. What stays equal: the config blob (its digest
    is podman's image ID) and the diff_ids, as long as the manifest format is kept (OCI in, OCI
    out; `--format v2s2` rewrites the config). Compression is deterministic: pushing the same
    local image twice gives the same manifest digest. Use push(...).digest (from --digestfile)
    as the manifest digest to expect in the registry, and ImageIdentity.content() to compare
    images across clients.

    Layers of an image pulled from a registry are also stored uncompressed, but the blob-info
    cache remembers the compressed digests; pushing it back to the same registry reuses them
    (HEAD / cross-repository mount) instead of uploading. One Podman = one cache.

    podman refuses a --runroot longer than 50 characters, hence /tmp/berth-pm-XXXX.
    Call cleanup() when done (it removes the work directory and the runroot).
    """

    def __init__(self, workdir: Path, *, storage_driver: str = "vfs",
                 timeout: float = DEFAULT_TIMEOUT, log_level: str = "warn"):
        if not have_podman():
            raise FileNotFoundError("podman is not installed")
        self.workdir = Path(workdir).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.cenv = ContainersEnv(self.workdir / "config")
        w = self.workdir
        self.root = w / "root"
        # podman refuses a runroot longer than 50 characters (it holds sockets, whose paths
        # are limited): use a short directory of our own under /tmp
        self.runroot = Path(tempfile.mkdtemp(prefix="berth-pm-", dir="/tmp"))
        dirs = {"tmp": w / "libpod-tmp", "networks": w / "networks", "volumes": w / "volumes",
                "copytmp": self.cenv.tmp}
        for d in (self.root, self.runroot, *dirs.values()):
            d.mkdir(parents=True, exist_ok=True)
        self.containers_conf = w / "config" / "containers.conf"
        self.containers_conf.write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{w / "events.log"}"\n'
            f'tmp_dir = "{dirs["tmp"]}"\n'
            f'image_copy_tmp_dir = "{dirs["copytmp"]}"\n'
            f'volume_path = "{dirs["volumes"]}"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{dirs["networks"]}"\n')
        self.storage_conf = w / "config" / "storage.conf"
        self.storage_conf.write_text(f'[storage]\ndriver = "{storage_driver}"\n'
                                     f'runroot = "{self.runroot}"\ngraphroot = "{self.root}"\n')
        self.base = ["podman", f"--log-level={log_level}", "--root", str(self.root),
                     "--runroot", str(self.runroot), "--storage-driver", storage_driver,
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--tmpdir", str(dirs["tmp"]), "--network-config-dir", str(dirs["networks"]),
                     "--volumepath", str(dirs["volumes"])]
        self.env = self.cenv.env(CONTAINERS_CONF=self.containers_conf,
                                 CONTAINERS_STORAGE_CONF=self.storage_conf)
        self._n = 0

    # -- plumbing
    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return _run([*self.base, *args], env=self.env, timeout=timeout or self.timeout)

    def _transfer_flags(self, ref: str, creds: str | None, tls_verify: bool) -> list[str]:
        flags = ["--signature-policy", str(self.cenv.policy)]
        if not ref.startswith(("oci:", "oci-archive:", "dir:", "docker-archive:",
                               "containers-storage:")):
            flags.append(f"--tls-verify={'true' if tls_verify else 'false'}")
            if creds:
                flags.append(f"--creds={creds}")
        return flags

    @staticmethod
    def _registry_ref(ref: str) -> str:
        return ref[len("docker://"):] if ref.startswith("docker://") else ref

    # -- API
    def load_oci(self, layout_path: Path, tag: str = "latest", name: str | None = None) -> str:
        """Import oci:<layout_path>:<tag> into local storage; tag it
        localhost/berth-test/<name or layout dir name>:<tag> and return that name."""
        layout = Path(layout_path).absolute()
        p = self.run("pull", "-q", *self._transfer_flags("oci:", None, False),
                     f"oci:{layout}:{tag}")
        image_id = p.stdout.strip().splitlines()[-1]
        # `podman pull oci:PATH` names the image after PATH; give it a predictable name
        base = re.sub(r"[^a-z0-9._-]+", "-", (name or layout.name).lower()).strip("-._")
        local = f"localhost/berth-test/{base or 'image'}:{tag}"
        self.run("tag", image_id, local)
        return local

    def push(self, local: str, dest: str, *, creds: str | None = None, tls_verify: bool = False,
             extra: Iterable[str] = ()) -> PushResult:
        """podman push local docker://dest (dest "host:port/repo:tag", with or without
        docker://). Returns the pushed manifest digest (--digestfile)."""
        self._n += 1
        digestfile = self.cenv.tmp / f"push-digest-{self._n}"
        dest = dest if "://" in dest or dest.startswith(("oci:", "dir:")) else f"docker://{dest}"
        t0 = time.perf_counter()
        p = self.run("push", *self._transfer_flags(self._registry_ref(dest), creds, tls_verify),
                     "--digestfile", str(digestfile), *extra, local, dest)
        dt = time.perf_counter() - t0
        digest = digestfile.read_text().strip()
        digestfile.unlink()
        return PushResult(digest, dt, p.stdout, p.stderr)

    def pull(self, ref: str, *, creds: str | None = None, tls_verify: bool = False,
             extra: Iterable[str] = ()) -> str:
        """podman pull ref ("host:port/repo:tag" or "...@sha256:..."); returns the image ID
        (== config digest hex)."""
        ref = self._registry_ref(ref)
        p = self.run("pull", "-q", *self._transfer_flags(ref, creds, tls_verify), *extra, ref)
        return p.stdout.strip().splitlines()[-1]

    def inspect(self, ref: str) -> dict:
        """`podman image inspect` of a local image (name, ID)."""
        return json.loads(self.run("image", "inspect", self._registry_ref(ref)).stdout)[0]

    def inspect_digest(self, ref: str) -> str:
        """The manifest digest podman recorded for a local image: that of the manifest it was
        PULLED (or loaded) with. After a push it is NOT the pushed digest: use push().digest."""
        return self.inspect(ref)["Digest"]

    def identity(self, ref: str) -> ImageIdentity:
        """ImageIdentity of a local image; manifest_digest as in inspect_digest()."""
        info = self.inspect(ref)
        return ImageIdentity(info.get("Digest"), "sha256:" + info["Id"],
                             tuple(info["RootFS"]["Layers"]), info.get("Os"),
                             info.get("Architecture"))

    def images(self) -> list[dict]:
        return json.loads(self.run("images", "--format", "json").stdout or "[]")

    def rmi(self, *refs: str, force: bool = True) -> None:
        if refs:
            self.run("rmi", *(["--force"] if force else []), *map(self._registry_ref, refs))

    def cleanup(self) -> None:
        """Remove every local image and the whole work directory."""
        try:
            self.run("rmi", "--all", "--force", timeout=120)
        except ClientError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
