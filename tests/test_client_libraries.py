"""The Python registry libraries the README's Clients section covers: what fails as a user writes
it, and that the workaround given there works (a fix upstream makes the first half fail, which
says the README should be updated)."""
from __future__ import annotations

import uuid
from pathlib import Path

import oras.client
import pytest
import requests
from dxf import DXF
from dxf.exceptions import DXFAuthInsecureError

from chalicelib.auth import accounts

PASSWORD = "library-user-pw"


@pytest.fixture(scope="module")
def user():
    """A user owning a namespace of the same name."""
    name = "lib" + uuid.uuid4().hex[:8]
    accounts.create_user(name, PASSWORD, log2_n=10)
    accounts.create_namespace(name, name)
    return name


def push_token(registry: str, user: str, repository: str) -> str:
    """The README's workaround: ask the token endpoint for pull and push yourself."""
    answer = requests.get(f"{registry}/v2/_berth/token", auth=(user, PASSWORD),
                          params={"service": "berth", "scope": f"repository:{repository}:pull,push"})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def test_oras_py_pushes_with_a_token_fetched_by_hand(registry, user, tmp_path, monkeypatch):
    host = registry.split("//", 1)[1]
    monkeypatch.chdir(tmp_path)             # oras-py names pushed files by their relative path
    Path("notes.txt").write_text("release notes\n")
    target = f"{host}/{user}/notes:v1"
    logged_in = oras.client.OrasClient(hostname=host, insecure=True)
    logged_in.login(username=user, password=PASSWORD)
    with pytest.raises(ValueError, match="although your role .owner. allows it"):
        logged_in.push(files=["notes.txt"], target=target)   # kept its pull-only token
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.auth.set_token_auth(push_token(registry, user, f"{user}/notes"))
    assert client.push(files=["notes.txt"], target=target).status_code == 201
    pulled = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert [Path(p).read_text() for p in pulled] == ["release notes\n"]


def test_python_dxf_pushes_with_a_token_fetched_by_hand(registry, user, tmp_path):
    host = registry.split("//", 1)[1]
    blob = tmp_path / "data.bin"
    blob.write_bytes(b"some bytes for dxf")

    def password_auth(dxf, response):
        dxf.authenticate(user, PASSWORD, response=response)
    with pytest.raises(DXFAuthInsecureError):
        DXF(host, f"{user}/dxf", password_auth, insecure=True).push_blob(str(blob))
    dxf = DXF(host, f"{user}/dxf", insecure=True)
    dxf.token = push_token(registry, user, f"{user}/dxf")
    digest = dxf.push_blob(str(blob))
    dxf.set_alias("v1", digest)
    assert dxf.get_alias("v1") == [digest]
    assert b"".join(dxf.pull_blob(digest)) == b"some bytes for dxf"
