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
from chalicelib.api.manage.repos import SEARCH_QUERIES
from tests.support.clients import ClientError, layout_digests, skopeo_copy, skopeo_inspect
from tests.support.images import build_image
from tests.support.registry_api import RegistryClient, push_image

CHROMIUM = "/usr/bin/chromium"
KiB = 1 << 10
PASSWORD = "console user password"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tests" / "screenshots" / "console"
DOCS_SHOTS = ROOT / "docs" / "screenshots"

from axe_playwright_python.sync_playwright import Axe
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
    context = browser.new_context(viewport=VIEWPORTS["desktop"], device_scale_factor=1)
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


VIEWPORTS = {"desktop": {"width": 1280, "height": 820}, "phone": {"width": 390, "height": 844}}


WIDER_THAN_SCREEN = """() => [...document.querySelectorAll('body *')].filter(el =>
    el.getBoundingClientRect().right > innerWidth + 1 && !el.closest('.table-box, .cmd, .nav'))
    .slice(0, 8).map(el => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect()
    .right)}`)"""


def check_page(page, what: str) -> None:
    """What every page must do: no sideways scrolling of the page (at 390 px too), and no
    serious or critical accessibility violation (axe-core)."""
    page.wait_for_timeout(100)
    # audit the page at rest: mid-fade, a toast's text is partly transparent, and axe-core
    # measures the contrast of that passing frame (seen once in CI)
    page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')",
                           timeout=5000)
    widths = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], f"{what}: the page scrolls sideways ({widths}): " + str(
        page.evaluate(WIDER_THAN_SCREEN))
    dialog = page.locator("dialog[open]")
    if dialog.count():
        box = dialog.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= widths[1], f"{what}: dialog {box}"
    results = Axe().run(page)
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{what}: accessibility violations {bad}"


def sign_in(page, user: str, password: str = PASSWORD) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")


@pytest.fixture(params=sorted(VIEWPORTS))
def screen(request):
    return request.param


def test_registry_root_opens_the_console(registry):
    r = requests.get(f"{registry}/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/v2/_berth/console/"
    assert requests.get(f"{registry}/").headers["Content-Type"].startswith("text/html")


def test_console_end_to_end(page, screen, registry, image_cache, tmp_path):
    page.set_viewport_size(VIEWPORTS[screen])
    suffix = "" if screen == "desktop" else "-phone"
    host = urlparse(registry).netloc
    # fixed names (each test session has a fresh registry) so the docs screenshots read well
    user, namespace = {"desktop": ("dana", "acme"), "phone": ("lee", "lee-labs")}[screen]
    if accounts.get_user(user) is not None or accounts.get_namespace(namespace) is not None:
        user, namespace = "web" + uuid.uuid4().hex[:8], "team" + uuid.uuid4().hex[:6]
    # on the phone the user starts with an administrator's initial password and sets their own
    # registry password while activating
    initial = PASSWORD if screen == "desktop" else "initial password from the admin"
    accounts.create_user(user, initial, log2_n=10)
    creds = f"{user}:{PASSWORD}"
    small = build_image(image_cache / "console-small", layers=[300 * KiB, 120 * KiB],
                        seed="berth-console")
    other = build_image(image_cache / "console-other", layers=[64 * KiB], seed="berth-console-2")

    # ---- the registry's root opens the console; a newcomer is told how to get an account
    page.goto(f"{registry}/")
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    expect(page.locator(".newcomer")).to_contain_text("administrators")
    check_page(page, "sign-in")
    shot(page, f"01-sign-in{suffix}")
    sign_in(page, user, "wrong password!")
    expect(page.locator("[data-field=password] .field-error")).to_contain_text("Incorrect")
    sign_in(page, user, initial)

    # ---- activation: namespace, user name and registry password in one form
    expect(page.get_by_role("heading", name="Activate the registry")).to_be_visible()
    expect(page.get_by_label("User name for docker login")).to_have_value(user)
    if initial != PASSWORD:
        page.get_by_label("Namespace").fill(namespace)
        page.locator("input[name=current_password]").fill("not the password")
        page.get_by_label("New registry password").fill(PASSWORD)
        page.get_by_label("New registry password").press("Enter")
        expect(page.locator("[data-field=current_password] .field-error")).to_contain_text(
            "not right")
        page.locator("input[name=current_password]").fill(initial)
    page.get_by_label("Namespace").fill("Not Valid!")
    page.get_by_label("Namespace").press("Enter")
    error = page.locator("[data-field=name] .field-error")
    expect(error).to_contain_text("lowercase letters (a-z)")
    expect(error).to_contain_text("'-'")
    check_page(page, "activate")
    shot(page, f"02-activate{suffix}")
    page.get_by_label("Namespace").fill(namespace)
    page.get_by_label("Namespace").press("Enter")
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()
    for password, status in ((initial, 401 if initial != PASSWORD else 200), (PASSWORD, 200)):
        assert requests.get(f"{registry}/v2/_berth/token",
                            auth=(user, password)).status_code == status
    login = f"docker login --username={user} {host}"
    assert page.locator(".cmd code").all_text_contents().count(login) == 1
    check_page(page, "images, empty")
    shot(page, f"03-images-empty{suffix}")

    # ---- a second, pushed repository for the list (and to check it survives the delete)
    keep = f"{namespace}/worker"
    skopeo_copy(other.oci_ref, f"docker://{host}/{keep}:1.4", creds=creds)
    client = RegistryClient((user, PASSWORD))
    api_repo = f"{namespace}/api"
    push_image(registry, api_repo, "2.3.0", client=client,
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
    check_page(page, "new repository dialog")
    shot(page, f"04-new-repository{suffix}")
    dialog.get_by_role("button", name="Create repository").click()
    repo = f"{namespace}/webapp"
    expect(page.get_by_role("heading", name=repo)).to_be_visible()
    expect(page.get_by_role("heading", name="No tags")).to_be_visible()
    commands = page.locator(".cmd code").all_text_contents()
    assert sum(c.startswith("docker push ") for c in commands) == 1, commands   # once
    assert commands.count(login) == 1
    check_page(page, "repository, empty")
    shot(page, f"05-repository-new{suffix}")

    # ---- push two tags with skopeo as this user; the page shows them with their size
    skopeo_copy(small.oci_ref, f"docker://{host}/{repo}:v1", creds=creds)
    skopeo_copy(small.oci_ref, f"docker://{host}/{repo}:v2", creds=creds)
    expected = small.manifest_size + small.config_size + sum(small.layer_sizes)
    stats = api_get(registry, user, f"repositories/{repo}")
    assert (stats["tag_count"], stats["size"]) == (2, expected)

    # ---- repository page: platforms of a single-architecture image, commands, copy
    page.reload()
    expect(page.locator("tr[data-tag]")).to_have_count(2)
    expect(page.locator("tr[data-tag=v1] [data-col=size]")).to_have_text(format_size(expected))
    expect(page.locator("tr[data-tag=v1] .platform")).to_have_text("linux/amd64")
    commands = page.locator(".cmd code").all_text_contents()
    assert login in commands
    assert f"docker pull {host}/{repo}:v2" in commands or f"docker pull {host}/{repo}:v1" in \
        commands
    # the proposed tag is a new one: pasting the commands replaces nothing
    assert f"docker tag my-image:latest {host}/{repo}:v3" in commands, commands
    assert f"docker push {host}/{repo}:v3" in commands
    # served over plain HTTP: the podman variants say --tls-verify=false
    page.locator(".plain-http summary").first.click()
    assert f"podman push --tls-verify=false my-image:latest {host}/{repo}:v3" in \
        page.locator(".cmd code").all_text_contents()
    expect(page.locator(".plain-http").last).to_contain_text("insecure-registries")
    # commands never wrap mid-word: each one is a single line in its box
    heights = page.eval_on_selector_all(".cmd code", "els => els.map(e => e.scrollHeight / "
                                        "parseFloat(getComputedStyle(e).lineHeight))")
    assert all(h < 2 for h in heights), heights
    digest = api_get(registry, user, f"repositories/{repo}/_tags")["tags"][0]["digest"]
    page.locator(f"tr[data-tag=v1] button[data-copy='{digest}']").click()
    assert page.evaluate("navigator.clipboard.readText()") == digest
    page.locator("tr[data-tag=v1] button[data-copy^='docker pull']").click()
    expected_pull = f"docker pull {host}/{repo}:v1"
    expect(page.locator("body")).to_have_attribute("data-copied", expected_pull)
    assert page.evaluate("navigator.clipboard.readText()") == expected_pull
    page.mouse.move(0, 0)
    page.wait_for_timeout(1700)                              # "Copied" back to "Copy pull"
    check_page(page, "repository")
    shot(page, f"07-repository{suffix}", f"repository{suffix}.png")

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
    check_page(page, "delete tag dialog")
    dialog.get_by_role("button", name="Delete tag").click()
    expect(page.locator("tr[data-tag]")).to_have_count(1)
    with pytest.raises(ClientError) as failed:
        skopeo_inspect(f"docker://{host}/{repo}:v2", creds=creds)
    assert "manifest unknown" in failed.value.stderr.lower()
    skopeo_copy(small.oci_ref, f"docker://{host}/{repo}:v2", creds=creds)    # back, for below

    # ---- the image list: search, then select two images, Delete, a confirmation naming every
    # tag of both, OK
    page.get_by_role("link", name="Images", exact=True).click()
    row = page.locator(f"tr[data-repo='{repo}']")
    expect(row.locator("[data-col=tags]")).to_have_text("2")
    expect(row.locator("[data-col=size]")).to_have_text(format_size(expected))
    expect(row).to_contain_text("nginx + the built app")
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    page.get_by_label("Search images").fill("work")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    page.get_by_label("Search images").fill("")
    expect(page.locator("tbody tr")).to_have_count(3)
    page.mouse.move(0, 0)
    check_page(page, "image list")
    shot(page, f"06-image-list{suffix}", f"image-list{suffix}.png")
    page.get_by_label(f"Select {repo}").check()
    page.get_by_label(f"Select {api_repo}").check()
    page.get_by_role("button", name="Delete (2)").click()
    dialog = page.get_by_role("dialog")
    for ref in (f"{repo}:v1", f"{repo}:v2", f"{api_repo}:2.3.0"):
        expect(dialog).to_contain_text(ref)
    expect(dialog).not_to_contain_text(keep)
    check_page(page, "delete images dialog")
    shot(page, f"09-delete-images{suffix}")
    page.keyboard.press("Escape")                         # Escape cancels
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.get_by_role("button", name="Delete (2)").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete 2 images").click()
    expect(page.locator(f"tr[data-repo='{repo}']")).to_have_count(0)
    expect(page.locator(f"tr[data-repo='{api_repo}']")).to_have_count(0)
    expect(page.locator(f"tr[data-repo='{keep}']")).to_be_visible()
    for ref in (f"{repo}:v1", f"{repo}:v2", f"{api_repo}:2.3.0"):
        with pytest.raises(ClientError) as failed:
            skopeo_inspect(f"docker://{host}/{ref}", creds=creds)
        assert "manifest unknown" in failed.value.stderr.lower() or "name unknown" in \
            failed.value.stderr.lower(), failed.value.stderr
    pulled = tmp_path / "kept"
    skopeo_copy(f"docker://{host}/{keep}:1.4", f"oci:{pulled}:1.4", creds=creds)
    assert layout_digests(pulled) == layout_digests(other.path)

    # ---- a deleted repository's address says so; the session lives in a new tab
    tab = page.context.new_page()
    tab.goto(f"{registry}/v2/_berth/console/#/repo/{repo}")
    expect(tab.get_by_role("heading", name="Repository not found")).to_be_visible()
    check_page(tab, "repository not found")
    tab.close()

    # ---- explore: another namespace's public repository, with pull commands only
    stranger, their_ns = "pub" + uuid.uuid4().hex[:6], "open" + uuid.uuid4().hex[:6]
    accounts.create_user(stranger, PASSWORD, log2_n=10)
    accounts.create_namespace(their_ns, stranger, public=True)
    shared = f"{their_ns}/toolbox"
    skopeo_copy(other.oci_ref, f"docker://{host}/{shared}:2.0", creds=f"{stranger}:{PASSWORD}")
    # More private repositories sorting before it than one Explore request reads: the console
    # must read on rather than say that nothing matches.
    fillers = "a" + uuid.uuid4().hex[:6]
    accounts.create_namespace(fillers, stranger)
    for n in range(SEARCH_QUERIES * 20 + 10):
        accounts.set_repository_public(f"{fillers}/r{n}", False)
    page.get_by_role("link", name="Explore").click()
    expect(page.get_by_role("heading", name="Explore")).to_be_visible()
    page.get_by_label("Search public images").fill(their_ns)
    expect(page.locator("tbody tr")).to_have_count(1)
    check_page(page, "explore")
    shot(page, f"10-explore{suffix}")
    page.get_by_role("link", name=shared).click()
    expect(page.get_by_role("heading", name=shared)).to_be_visible()
    expect(page.locator(".repo-title .badge")).to_have_count(1)
    expect(page.locator(".repo-title .badge")).to_have_text("public")
    commands = page.locator(".cmd code").all_text_contents()
    assert f"docker pull {host}/{shared}:2.0" in commands
    assert not [c for c in commands if c.startswith(("docker push", "docker tag",
                                                     "docker login"))], commands
    expect(page.get_by_role("button", name="Delete image")).to_have_count(0)
    check_page(page, "public repository, pull only")

    # ---- account: a lasting access token needs the password again
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    page.get_by_label("Token name").fill("ci-deploy")
    page.get_by_label("Token name").press("Enter")
    expect(page.locator("[data-field=password] .field-error")).to_contain_text("password")
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label("Your password").press("Enter")
    expect(page.locator(".secret code")).to_contain_text("berth_")
    expect(page.locator("tr[data-token=ci-deploy]")).to_be_visible()
    page.mouse.move(0, 0)
    check_page(page, "account")
    shot(page, f"11-account{suffix}")

    # ---- signing out ends the session in every tab; a deep link survives signing in again
    other_tab = page.context.new_page()
    other_tab.goto(f"{registry}/v2/_berth/console/#/account")
    expect(other_tab.get_by_role("heading", name="Account")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    assert not page.evaluate("document.cookie")           # HttpOnly: scripts never see it
    other_tab.get_by_role("link", name="Images", exact=True).click()
    expect(other_tab.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    other_tab.close()
    page.goto(f"{registry}/v2/_berth/console/#/repo/{keep}")
    expect(page.get_by_role("heading", name="Sign in to Berth")).to_be_visible()
    sign_in(page, user)
    expect(page.get_by_role("heading", name=keep)).to_be_visible()
    assert page.url.endswith(f"#/repo/{keep}")


def test_sign_up_in_one_form_when_open(page, registry, monkeypatch):
    from chalicelib.config import settings
    monkeypatch.setenv("BERTH_SIGNUP", "open")
    settings.cache_clear()
    try:
        page.set_viewport_size(VIEWPORTS["phone"])
        page.goto(f"{registry}/v2/_berth/console/")
        page.get_by_role("link", name="Create an account").click()
        expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
        name = "new" + uuid.uuid4().hex[:6]
        page.get_by_label("User name").fill(name)
        expect(page.get_by_label("Namespace")).to_have_value(name)
        page.get_by_label("Registry password").fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        check_page(page, "sign-up")
        page.get_by_label("Password again").press("Enter")
        expect(page.get_by_role("heading", name="No images yet")).to_be_visible()
        assert accounts.get_namespace(name).owner == name
    finally:
        monkeypatch.delenv("BERTH_SIGNUP")
        settings.cache_clear()


def test_admin_sees_users_page(page, registry, admin_credentials):
    page.goto(f"{registry}/v2/_berth/console/")
    sign_in(page, *admin_credentials)
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    expect(page.locator(f"tr[data-user='{admin_credentials[0]}']")).to_be_visible()
    page.get_by_role("button", name="Create an invitation").click()
    expect(page.locator(".secret code")).to_have_count(1)
    for width in (1280, 390, 360):
        page.set_viewport_size({"width": width, "height": 820})
        check_page(page, f"users at {width} px")
    page.mouse.move(0, 0)
    shot(page, "11-users")
