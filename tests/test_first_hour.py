"""What a newcomer meets first: refusals that say what to do, and the console's address."""
from __future__ import annotations

import subprocess
import tarfile
import uuid

import pytest
import requests

from chalicelib.auth import accounts
from tests.support.clients import ClientError, skopeo_copy
from tests.support.dockerconfig import file_store_config
from tests.support.images import build_image
from tests.support.registry_api import RegistryClient, error_code, push_image

PASSWORD = "first-hour-password"


def new_user() -> str:
    name = "u" + uuid.uuid4().hex[:10]
    accounts.create_user(name, PASSWORD, log2_n=10)
    return name


def unused_namespace() -> str:
    return "ns" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def owner():
    """A user with a namespace holding one private image."""
    user, namespace = new_user(), unused_namespace()
    accounts.create_namespace(namespace, user)
    return user, namespace


def refusal(r: requests.Response) -> tuple[str, str, str]:
    """(code, body message, error_description of the challenge) of a 401 insufficient_scope."""
    assert r.status_code == 401, r.text
    challenge = r.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    description = challenge.split('error_description="', 1)[1].split('"', 1)[0]
    return error_code(r), r.json()["errors"][0]["message"], description


def test_push_into_a_missing_namespace_says_how_to_activate_it(registry):
    user = new_user()
    namespace = unused_namespace()
    client = RegistryClient((user, PASSWORD))
    code, message, description = refusal(
        client.post(f"{registry}/v2/{namespace}/app/blobs/uploads/"))
    assert code == "NAME_UNKNOWN"
    assert f"namespace '{namespace}' does not exist" in message
    assert f"{registry}/v2/_berth/console/" in message
    assert f"berth namespace add {namespace} --owner {user}" in message
    assert description == message    # what docker prints, and HEAD answers have no body
    head = client.head(f"{registry}/v2/{namespace}/app/blobs/sha256:{'0' * 64}")
    assert head.status_code == 401 and f"berth namespace add {namespace}" in head.headers[
        "WWW-Authenticate"]
    # once activated, the same push goes through
    accounts.create_namespace(namespace, user)
    push_image(registry, f"{namespace}/app", "v1", client=RegistryClient((user, PASSWORD)))


def test_someone_elses_namespace_is_denied_without_naming_its_repositories(registry, owner):
    owner_name, namespace = owner
    push_image(registry, f"{namespace}/secret", "v1",
               client=RegistryClient((owner_name, PASSWORD)))
    stranger = RegistryClient((new_user(), PASSWORD))
    answers = [refusal(stranger.post(f"{registry}/v2/{namespace}/{repo}/blobs/uploads/"))
               for repo in ("secret", "nothing-here")]
    answers += [refusal(stranger.get(f"{registry}/v2/{namespace}/{repo}/manifests/v1"))
                for repo in ("secret", "nothing-here")]
    for code, message, _ in answers:
        assert code == "DENIED" and f"namespace '{namespace}' belongs to another account" in message
        assert "does not exist" not in message
    # the existing repository and the missing one get the same words
    assert answers[0] == answers[1] and answers[2] == answers[3]
    assert not any("secret" in message for _, message, _ in answers)


def test_anonymous_callers_learn_nothing_about_namespaces(registry, owner):
    _, namespace = owner
    anonymous = RegistryClient(None)
    answers = {refusal(anonymous.post(f"{registry}/v2/{ns}/app/blobs/uploads/"))
               for ns in (namespace, unused_namespace(), unused_namespace())}
    host = registry.split("//")[1]
    assert answers == {("DENIED", f"requested access to the resource is denied: sign in first "
                                  f"(docker login {host})",
                        f"requested access to the resource is denied: sign in first "
                        f"(docker login {host})")}


def test_the_reason_cannot_break_the_challenge_header(registry):
    user = new_user()
    token = RegistryClient((user, PASSWORD)).token(registry, ("repository:x/y:pull",))
    r = requests.get(f"{registry}/v2/{unused_namespace()}/app/tags/list",
                     headers={"Authorization": f"Bearer {token}", "Host": 'evil"host\\x'})
    challenge = r.headers["WWW-Authenticate"]
    description = challenge.split('error_description="', 1)[1]
    assert description.endswith('"') and '"' not in description[:-1] and "\\" not in description
    assert "evilhostx" in description


def test_a_pull_only_login_in_ones_own_namespace_says_so(registry, owner):
    owner_name, namespace = owner
    secret = accounts.create_access_token(owner_name, "ci-" + uuid.uuid4().hex[:6], "pull")
    code, message, _ = refusal(RegistryClient((owner_name, secret)).post(
        f"{registry}/v2/{namespace}/app/blobs/uploads/"))
    assert code == "DENIED" and "pull-only access token" in message
    assert "role (owner)" in message


def test_a_pull_member_is_told_which_role_it_lacks(registry, owner):
    _, namespace = owner
    reader = new_user()
    accounts.add_member(namespace, reader, "pull")
    code, message, _ = refusal(RegistryClient((reader, PASSWORD)).post(
        f"{registry}/v2/{namespace}/app/blobs/uploads/"))
    assert code == "DENIED"
    assert message == (f"your role in namespace '{namespace}' (pull) does not allow push: "
                       "ask its owner for the push role")


def test_console_without_slash_redirects_as_html(registry):
    r = requests.get(f"{registry}/v2/_berth/console", allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == "/v2/_berth/console/"
    assert r.headers["Content-Type"].startswith("text/html")
    assert 'href="/v2/_berth/console/"' in r.text
    followed = requests.get(f"{registry}/v2/_berth/console")
    assert followed.status_code == 200 and "text/html" in followed.headers["Content-Type"]
    assert followed.url.endswith("/v2/_berth/console/")


@pytest.mark.e2e
@pytest.mark.needs("docker", "dockerd", "skopeo")
def test_docker_and_skopeo_show_the_activation_hint(registry, docker_engine, tmp_path):
    """What the user reads in the terminal, not only what the body says."""
    user, namespace = new_user(), unused_namespace()
    host = registry.split("//", 1)[1]
    env = docker_engine.env(DOCKER_CONFIG=str(file_store_config(tmp_path / "docker-config")))

    def docker(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], input=stdin, env=env, capture_output=True,
                              text=True, timeout=300)
    image = f"{host}/{namespace}/hello:v1"
    (tmp_path / "hello.txt").write_text("hello\n")
    with tarfile.open(tmp_path / "hello.tar", "w") as tar:
        tar.add(tmp_path / "hello.txt", arcname="hello.txt")
    assert docker("import", str(tmp_path / "hello.tar"), image).returncode == 0
    assert docker("login", host, "--username", user, "--password-stdin",
                  stdin=PASSWORD).returncode == 0
    try:
        pushed = docker("push", image)
        assert pushed.returncode != 0
        assert (f"denied: namespace '{namespace}' does not exist: activate it in the console"
                in pushed.stderr)
        assert f"berth namespace add {namespace} --owner {user}" in pushed.stderr
        img = build_image(tmp_path / "layout", layers=[1024], seed="first-hour")
        with pytest.raises(ClientError) as refused:
            skopeo_copy(img.oci_ref, f"docker://{image}", creds=f"{user}:{PASSWORD}")
        assert f"namespace '{namespace}' does not exist" in refused.value.stderr
    finally:
        docker("rmi", "--force", image)


def test_an_admin_with_a_pull_token_is_told_about_the_token(registry, owner):
    _, namespace = owner
    admin = "adm" + uuid.uuid4().hex[:8]
    accounts.create_user(admin, PASSWORD, admin=True, log2_n=10)
    secret = accounts.create_access_token(admin, "ci", "pull")
    code, message, _ = refusal(RegistryClient((admin, secret)).post(
        f"{registry}/v2/{namespace}/app/blobs/uploads/"))
    assert code == "DENIED" and "role (admin)" in message and "pull-only access token" in message
    # nor does such a token create the namespace an admin's push would
    missing = unused_namespace()
    code, message, _ = refusal(RegistryClient((admin, secret)).post(
        f"{registry}/v2/{missing}/app/blobs/uploads/"))
    assert code == "NAME_UNKNOWN" and "as an admin, push with your password" in message
    assert accounts.get_namespace(missing) is None
    push_image(registry, f"{missing}/app", "v1", client=RegistryClient((admin, PASSWORD)))
    assert accounts.get_namespace(missing).owner == admin
