"""A docker client configuration that keeps logins in its own config.json."""
from __future__ import annotations

from pathlib import Path


def file_store_config(folder: Path) -> Path:
    """Create `folder` as a DOCKER_CONFIG whose logins go to config.json, as docker does on a
    fresh Debian machine. With no login stored yet, the docker CLI picks `pass` as its credential
    store whenever `pass` is installed (as on this machine), and `docker login` then fails on the
    uninitialised password store; an existing `auths` entry makes it use the file instead."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"auths": {"placeholder.invalid": {}}}')
    return folder
