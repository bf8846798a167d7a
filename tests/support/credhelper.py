"""A real docker credential helper for tests: Debian's docker-credential-pass on a password store
and GnuPG key made for the test.

The helper is unpacked by scripts/install-system-deps.sh into .cache/, not installed: on the
PATH of every process, next to `pass`, it would become the docker CLI's default credential store
and every `docker login` on the machine would try to use it. Tests put it on their own PATH.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

HELPERS = Path(__file__).resolve().parent.parent.parent / ".cache" / "docker-credential-helpers" / "usr" / "bin"


@contextmanager
def pass_credential_store(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """docker-credential-pass on PATH and a password store in `folder`, for this test only."""
    assert (HELPERS / "docker-credential-pass").exists() and shutil.which("pass"), \
        "docker-credential-pass/pass missing: run `make system-deps`"
    gnupg = folder / "gnupg"
    gnupg.mkdir(mode=0o700, parents=True)
    monkeypatch.setenv("PATH", f"{HELPERS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    monkeypatch.setenv("PASSWORD_STORE_DIR", str(folder / "store"))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "berth-test@example.invalid",
                    "default", "default", "never"], check=True, capture_output=True)
    subprocess.run(["pass", "init", "berth-test@example.invalid"], check=True, capture_output=True)
    try:
        yield
    finally:   # the gpg-agent this key started
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True)
