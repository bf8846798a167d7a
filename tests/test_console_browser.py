"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright):
sign in, activate, create a repository, push with skopeo, see it, copy, delete a tag, delete the
image; then the registry itself must agree (skopeo). Screenshots of every page go to
tests/screenshots/console/; with BERTH_UPDATE_DOC_SCREENSHOTS=1, the image list and repository
page also to docs/screenshots/ (shown in the README), so a test run leaves the tree clean."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from chalicelib.auth import accounts
from tests.support.clients import ClientError, layout_digests, skopeo_copy, skopeo_inspect
from tests.support.images import build_image
from tests.support.registry_api import RegistryClient, push_image

CHROMIUM = "/usr/bin/chromium"
KiB = 1 << 10
PASSWORD = "console user password"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tests" / "screenshots" / "console"
DOCS_SHOTS = ROOT / "docs" / "screenshots"

from playwright.sync_api import expect, sync_playwright

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs(CHROMIUM, "skopeo"),
]
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def format_size(size: int) -> str:
    """The console's formatSize (app.js), for comparing what the page shows."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value, unit = float(size), 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.{2 if value < 10 else 1}f} {units[unit]}"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, registry):
    context = browser.new_context(viewport={"width": 1280, "height": 820},
                                  device_scale_factor=1)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=registry)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the API's 4xx answers are logged by Chromium as failed loads: expected, not errors
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
            "Failed to load resource" not in m.text else None)
    yield page
    context.close()
    assert not errors, errors


def shot(page, name: str, docs_name: str = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    dialog_open = page.evaluate("""() => {
        document.getElementById('toast').classList.remove('show');
        const open = Boolean(document.querySelector('dialog[open]'));
        if (!open && document.activeElement) document.activeElement.blur();
        return open;
    }""")
    page.wait_for_timeout(250)          # the toast's fade
    page.screenshot(path=str(path), full_page=not dialog_open)
    if docs_name and os.environ.get("BERTH_UPDATE_DOC_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / docs_name)


def api_get(registry: str, user: str, path: str) -> dict:
    token = requests.get(f"{registry}/v2/_berth/token", auth=(user, PASSWORD),
                         params={"service": "berth", "scope": "berth:api:*"}).json()["token"]
    r = requests.get(f"{registry}/v2/_berth/api/{path}",
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_console_assets_are_text_with_a_strict_policy(registry):
    r = requests.get(f"{registry}/v2/_berth/console", allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == "/v2/_berth/console/"
    for path, kind in (("", "text/html"), ("app.js", "text/javascript"), ("app.css", "text/css")):
        r = requests.get(f"{registry}/v2/_berth/console/{path}")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind), path
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "Set-Cookie" not in r.headers
    page = requests.get(f"{registry}/v2/_berth/console/").text
    assert "http://" not in page.replace('http://www.w3.org/2000/svg', '')   # nothing remote
    assert requests.get(f"{registry}/v2/_berth/console/other.js").status_code == 404


def test_console_end_to_end(page, registry, image_cache, tmp_path):
    host = urlparse(registry).netloc
    # fixed names (each test session has a fresh registry) so the docs screenshots read well
    user, namespace = "dana", "acme"
    if accounts.get_user(user) is not None or accounts.get_namespace(namespace) is not None:
        user, namespace = "web" + uuid.uuid4().hex[:8], "team" + uuid.uuid4().hex[:6]
    accounts.create_user(user, PASSWORD, log2_n=10)
    creds = f"{user}:{PASSWORD}"
    small = build_image(image_cache / "console-small", layers=[300 * KiB, 120 * KiB],
                        seed="berth-console")
    other = build_image(image_cache / "console-other", layers=[64 * KiB], seed="berth-console-2")

    # ---- sign in: a wrong password first, shown next to the password field
    page.goto(f"{registry}/v2/_berth/console/")
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    shot(page, "01-sign-in")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_label("Password").press("Enter")
    expect(page.locator("[data-field=password] .field-error")).to_contain_text("Incorrect")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")

    # ---- activation
    expect(page.get_by_role("heading", name="Activate the registry")).to_be_visible()
    page.get_by_label("Namespace").fill("Not Valid!")
    page.get_by_label("Namespace").press("Enter")
    expect(page.locator("[data-field=name] .field-error")).to_contain_text("lowercase")
    shot(page, "02-activate")
    page.get_by_label("Namespace").fill(namespace)
    page.get_by_label("Namespace").press("Enter")
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()
    expect(page.locator(".cmd code").first).to_have_text(f"docker login {host}")
    shot(page, "03-images-empty")

    # ---- a second, pushed repository for the list (and to check it survives the delete)
    keep = f"{namespace}/worker"
    skopeo_copy(other.oci_ref, f"docker://{host}/{keep}:1.4", creds=creds)
    client = RegistryClient((user, PASSWORD))
    push_image(registry, f"{namespace}/api", "2.3.0", client=client,
               layer_bytes=(b"api layer" * 20000, b"x" * 5000))

    # ---- new repository: name + description; a too long description is refused in place
    page.get_by_role("button", name="+ New repository").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("input[name=name]")).to_be_focused()
    dialog.locator("input[name=name]").fill("webapp")
    dialog.get_by_label("Description").fill("x" * 1001)
    dialog.locator("input[name=name]").press("Enter")
    expect(dialog.locator("[data-field=description] .field-error")).to_contain_text("limit is 1000")
    dialog.get_by_label("Description").fill("The public web front end: nginx serving the "
                                            "built single-page app.")
    shot(page, "04-new-repository")
    dialog.get_by_role("button", name="Create repository").click()
    repo = f"{namespace}/webapp"
    expect(page.get_by_role("heading", name=repo)).to_be_visible()
    expect(page.get_by_role("heading", name="No tags")).to_be_visible()
    shot(page, "05-repository-new")

    # ---- the same name again: the API's refusal appears next to the name field
    page.goto(f"{registry}/v2/_berth/console/#/")
    page.get_by_role("button", name="+ New repository").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=name]").fill("webapp")
    dialog.locator("input[name=name]").press("Enter")
    expect(dialog.locator("[data-field=name] .field-error")).to_contain_text("already exists")
    page.keyboard.press("Escape")                         # Escape closes the dialog
    expect(page.get_by_role("dialog")).to_have_count(0)

    # ---- push two tags with skopeo as this user; the page shows them with their size
    skopeo_copy(small.oci_ref, f"docker://{host}/{repo}:v1", creds=creds)
    skopeo_copy(small.oci_ref, f"docker://{host}/{repo}:v2", creds=creds)
    expected = small.manifest_size + small.config_size + sum(small.layer_sizes)
    stats = api_get(registry, user, f"repositories/{repo}")
    assert (stats["tag_count"], stats["size"]) == (2, expected)
    page.reload()
    row = page.locator(f"tr[data-repo='{repo}']")
    expect(row.locator("[data-col=tags]")).to_have_text("2")
    expect(row.locator("[data-col=size]")).to_have_text(format_size(expected))
    expect(row).to_contain_text("The public web front end")
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    # search
    page.get_by_label("Search images").fill("work")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    page.get_by_label("Search images").fill("")
    expect(page.locator("tbody tr")).to_have_count(3)
    page.mouse.move(0, 0)
    shot(page, "06-image-list", "image-list.png")

    # ---- repository page: tags, commands, copy
    row.get_by_role("link", name=repo).click()
    expect(page.get_by_role("heading", name=repo)).to_be_visible()
    expect(page.locator("tr[data-tag]")).to_have_count(2)
    expect(page.locator("tr[data-tag=v1] [data-col=size]")).to_have_text(format_size(expected))
    expect(page.locator("[data-fact=size]")).to_have_text(format_size(expected))
    commands = page.locator(".cmd code").all_text_contents()
    assert f"docker login {host}" in commands
    assert f"docker pull {host}/{repo}:v2" in commands or f"docker pull {host}/{repo}:v1" in \
        commands
    assert any(c.startswith("docker tag ") and c.endswith(f"{host}/{repo}:v2") or
               c.endswith(f"{host}/{repo}:v1") for c in commands)
    assert any(c.startswith(f"docker push {host}/{repo}:") for c in commands)
    page.locator("tr[data-tag=v1] button[data-copy]").click()
    expected_pull = f"docker pull {host}/{repo}:v1"
    expect(page.locator("body")).to_have_attribute("data-copied", expected_pull)
    assert page.evaluate("navigator.clipboard.readText()") == expected_pull
    page.mouse.move(0, 0)
    page.wait_for_timeout(1700)                              # "Copied" back to "Copy pull"
    shot(page, "07-repository", "repository.png")

    # ---- edit the description (Enter in a textarea is a newline: the Save button submits)
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Description").fill("nginx + the built app. Rebuilt on every merge.")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".description")).to_have_text("nginx + the built app. Rebuilt on "
                                                      "every merge.")

    # ---- delete tag v2
    page.locator("tr[data-tag=v2]").get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"{repo}:v2")
    shot(page, "08-delete-tag")
    dialog.get_by_role("button", name="Delete tag").click()
    expect(page.locator("tr[data-tag]")).to_have_count(1)
    with pytest.raises(ClientError) as failed:
        skopeo_inspect(f"docker://{host}/{repo}:v2", creds=creds)
    assert "manifest unknown" in failed.value.stderr.lower()

    # ---- delete the image: the dialog names what goes; Escape first, then confirm
    page.get_by_role("button", name="Delete image").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"{repo}:v1")
    expect(dialog).to_contain_text("1 manifest")
    shot(page, "09-delete-image")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.get_by_role("button", name="Delete image").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete image").click()
    expect(page.get_by_role("heading", name="Images")).to_be_visible()
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    expect(page.locator(f"tr[data-repo='{repo}']")).to_have_count(0)

    for tag in ("v1", "v2"):
        with pytest.raises(ClientError) as failed:
            skopeo_inspect(f"docker://{host}/{repo}:{tag}", creds=creds)
        assert "manifest unknown" in failed.value.stderr.lower()
    pulled = tmp_path / "kept"
    skopeo_copy(f"docker://{host}/{keep}:1.4", f"oci:{pulled}:1.4", creds=creds)
    assert layout_digests(pulled) == layout_digests(other.path)

    # ---- account: an access token, shown once
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    page.get_by_label("Token name").fill("ci-deploy")
    page.get_by_label("Token name").press("Enter")
    expect(page.locator(".secret code")).to_contain_text("berth_")
    expect(page.locator("tr[data-token=ci-deploy]")).to_be_visible()
    page.get_by_label("Current password").fill("not my password")
    page.locator("input[name=new_password]").fill("a new password")
    page.get_by_label("New password again").fill("a new password")
    page.get_by_label("New password again").press("Enter")
    expect(page.locator("[data-field=current_password] .field-error")).to_contain_text(
        "not right")
    page.mouse.move(0, 0)
    shot(page, "10-account")

    # ---- signing out ends the session
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('berth.token')") is None


def test_admin_sees_users_page(page, registry, admin_credentials):
    page.goto(f"{registry}/v2/_berth/console/")
    page.get_by_label("User name").fill(admin_credentials[0])
    page.get_by_label("Password").fill(admin_credentials[1])
    page.get_by_label("Password").press("Enter")
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    expect(page.locator(f"tr[data-user='{admin_credentials[0]}']")).to_be_visible()
    page.mouse.move(0, 0)
    shot(page, "11-users")
