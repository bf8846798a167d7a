"""The real docker engine (Debian's docker.io) for end-to-end tests, started privately per session.

dockerd runs as root here with vfs storage and no networking of its own (no bridge, no
iptables), its own data root, exec root and socket, so it never touches a system docker.
127.0.0.0/8 is an insecure registry by default: plain HTTP to a local registry works.
There is no Docker Hub: images are built FROM scratch out of files the test writes.
Its containerd (which dockerd starts itself) is reachable for `ctr` at `containerd_socket`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_TIMEOUT = 300
# A credential helper for the private docker config (see the file's docstring for why).
CREDENTIAL_HELPER_DIR = Path(__file__).resolve().parent / "bin"
CREDENTIAL_HELPER = "berth-test"


class DockerError(RuntimeError):
    def __init__(self, cmd: Sequence[str], proc: subprocess.CompletedProcess, elapsed: float):
        self.cmd = list(cmd)
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.elapsed = elapsed
        super().__init__(f"{' '.join(cmd)} exited {proc.returncode} after {elapsed:.1f}s:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def have_dockerd() -> bool:
    return shutil.which("dockerd") is not None and shutil.which("docker") is not None


@dataclass
class Result:
    stdout: str
    stderr: str
    elapsed: float


class DockerEngine:
    """One private dockerd. `docker(...)` runs the docker CLI against it with a private
    DOCKER_CONFIG (so logins never leak between tests or into the user's ~/.docker)."""

    def __init__(self, workdir: Path, registry_mirrors: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.registry_mirrors = list(registry_mirrors)   # dockerd --registry-mirror URL
        # unix socket paths must stay short (108 bytes): keep them in a short private folder.
        self.rundir = Path(f"/tmp/berth-dockerd-{os.getpid()}-{id(self) % 10000}")
        self.socket = self.rundir / "docker.sock"
        self.containerd_socket = self.rundir / "exec" / "containerd" / "containerd.sock"
        self.config_dir = workdir / "docker-config"
        self.log = workdir / "dockerd.log"
        self._proc: Optional[subprocess.Popen] = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "DockerEngine":
        self.rundir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config.json").write_text(json.dumps({"credsStore": CREDENTIAL_HELPER}))
        cmd = ["dockerd", "--storage-driver=vfs", "--iptables=false", "--ip6tables=false",
               "--bridge=none", "--data-root", str(self.workdir / "data"),
               "--exec-root", str(self.rundir / "exec"), "--pidfile", str(self.rundir / "pid"),
               "--host", f"unix://{self.socket}", "--exec-opt", "native.cgroupdriver=cgroupfs"]
        for mirror in self.registry_mirrors:
            cmd += ["--registry-mirror", mirror]
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"dockerd exited:\n{self.log.read_text()[-4000:]}")
            probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                   env=self.env(), capture_output=True, text=True)
            if probe.returncode == 0:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"dockerd did not answer in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        shutil.rmtree(self.rundir, ignore_errors=True)
        # vfs layers are plain directories: remove them so a long session does not fill the disk
        shutil.rmtree(self.workdir / "data", ignore_errors=True)

    # -- the CLI -------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict:
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.config_dir),
                   DOCKER_BUILDKIT="0", DOCKER_CLI_HINTS="false",
                   PATH=f"{CREDENTIAL_HELPER_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
        env.update(extra)
        return env

    def docker(self, *args: str, input: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run the docker CLI; raise DockerError unless it exits 0."""
        cmd = ["docker", *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, env=self.env(), input=input, capture_output=True, text=True,
                              timeout=timeout)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            raise DockerError(cmd, proc, elapsed)
        return Result(proc.stdout, proc.stderr, elapsed)

    def fails(self, *args: str, input: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT) -> DockerError:
        """Run a docker command that must fail; return its error (stdout, stderr, elapsed)."""
        try:
            result = self.docker(*args, input=input, timeout=timeout)
        except DockerError as error:
            return error
        raise AssertionError(f"docker {' '.join(args)} succeeded:\n{result.stdout}\n{result.stderr}")

    def login(self, host: str, user: str, password: str) -> Result:
        return self.docker("login", "--username", user, "--password-stdin", host, input=password)

    def stored_auth(self, host: str) -> Optional[str]:
        """The `user:password` docker stored for `host` (through the test credential helper)."""
        proc = subprocess.run([str(CREDENTIAL_HELPER_DIR / f"docker-credential-{CREDENTIAL_HELPER}"),
                               "get"], input=host, env=self.env(), capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        entry = json.loads(proc.stdout)
        return f"{entry['Username']}:{entry['Secret']}"

    def build_image(self, tag: str, layer_sizes: Sequence[int], seed: str) -> None:
        """Build `tag` FROM scratch with one layer per size, filled with incompressible bytes
        derived from `seed` (so two builds with the same seed give the same layers)."""
        context = self.workdir / "build" / tag.replace("/", "_").replace(":", "_")
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        lines = ["FROM scratch"]
        for index, size in enumerate(layer_sizes):
            name = f"layer{index}.bin"
            _write_random(context / name, size, f"{seed}-{index}")
            lines.append(f"COPY {name} /{name}")
        lines.append('CMD ["/layer0.bin"]')
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.docker("build", "--quiet", "--tag", tag, str(context), timeout=600)
        shutil.rmtree(context, ignore_errors=True)

    def repo_digest(self, ref: str) -> str:
        """The manifest digest docker recorded for `ref` after a push or pull."""
        out = self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
        name = ref.rsplit(":", 1)[0] if ref.rfind(":") > ref.rfind("/") else ref
        for entry in json.loads(out):
            if entry.split("@", 1)[0] == name:
                return entry.split("@", 1)[1]
        raise AssertionError(f"no repo digest for {ref} in {out}")

    def image_id(self, ref: str) -> str:
        return self.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def ctr(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """containerd's `ctr` against the containerd dockerd started (namespace berth-test)."""
        cmd = ["ctr", "--address", str(self.containerd_socket), "--namespace", "berth-test", *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            raise DockerError(cmd, proc, elapsed)
        return Result(proc.stdout, proc.stderr, elapsed)


    def ctr_fails(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> DockerError:
        try:
            result = self.ctr(*args, timeout=timeout)
        except DockerError as error:
            return error
        raise AssertionError(f"ctr {' '.join(args)} succeeded:\n{result.stdout}\n{result.stderr}")


def _write_random(path: Path, size: int, seed: str) -> None:
    """Incompressible, reproducible bytes: SHAKE-256 of the seed, streamed in 1 MiB blocks."""
    import hashlib
    remaining = size
    counter = 0
    with open(path, "wb") as out:
        while remaining > 0:
            block = hashlib.shake_256(f"{seed}:{counter}".encode()).digest(min(remaining, 1 << 20))
            out.write(block)
            remaining -= len(block)
            counter += 1
