"""The console's "Official images" page (#/official) in a real headless Chromium: what a mirror
rule cached (name, tags, size, last fetched), the copyable `docker pull` and the daemon.json
`registry-mirrors` snippet; an admin adds and removes a rule. The screenshot goes to
tests/screenshots/console/ and, with BERTH_UPDATE_DOC_SCREENSHOTS=1, to docs/screenshots/."""
from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from chalicelib.storage import mirrors
from tests.support.clients import skopeo_copy
from tests.support.images import build_image
from tests.support.refregistry import RefRegistry
from tests.support.registry_api import ADMIN
from tests.test_console_browser import (browser, check_page, format_size, page,  # noqa: F401
                                        shot)

pytestmark = pytest.mark.e2e
KiB = 1 << 10


def test_official_images_page_lists_the_cache_and_admins_edit_rules(
        page, registry, monkeypatch, tmp_path, image_cache):  # noqa: F811
    monkeypatch.setenv("BERTH_MIRROR_ALLOW_LOOPBACK", "1")
    host = urlparse(registry).netloc
    img = build_image(image_cache / "console-mirror", layers=[300 * KiB], seed="console-mirror")
    upstream = RefRegistry(tmp_path / "upstream").start()
    try:
        skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/nginx:1.27")
        mirrors.add_rule("hub", upstream.url, prefix="library/", public=True)
        skopeo_copy(f"docker://{host}/hub/nginx:1.27", f"oci:{tmp_path / 'pulled'}:1")

        page.goto(f"{registry}/v2/_berth/console/")
        page.get_by_label("User name").fill(ADMIN[0])
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_label("Password").press("Enter")
        # Explore lists the rules this user may pull from, each a link to the Official images page
        from playwright.sync_api import expect
        page.get_by_role("link", name="Explore").click()
        explore_rule = page.locator("#official-h").locator("..").locator("..").locator(
            "[data-mirror=hub]")
        expect(explore_rule).to_contain_text(f"hub/ (pulled through from {upstream.url}/library/)")
        check_page(page, "explore with official images")
        explore_rule.get_by_role("link").click()
        expect(page.get_by_role("heading", name="Official images")).to_be_visible()
        assert page.url.endswith("#/official")
        expect(page.locator("[data-mirror=hub] [data-image='hub/nginx']")).to_be_visible()
        check_page(page, "official images")
        rule = page.locator("[data-mirror=hub]")
        row = rule.locator("[data-image='hub/nginx']")
        expect(row).to_contain_text("1.27")
        expect(row).to_contain_text(format_size(img.total_size))
        expect(row.locator("code")).to_have_text(f"docker pull {host}/hub/nginx:1.27")
        expect(page.locator("[data-mirror=library]")).to_contain_text("registry-1.docker.io")
        snippet = json.loads(page.locator("[data-snippet='daemon.json']").inner_text())
        assert snippet == {"registry-mirrors": [registry]}
        row.get_by_role("button", name=f"Copy: docker pull {host}/hub/nginx:1.27").click()
        expect(page.locator("body")).to_have_attribute("data-copied",
                                                       f"docker pull {host}/hub/nginx:1.27")
        shot(page, "20-official-images", "official-images.png")

        # an admin adds a rule, a bad upstream is refused in words, then removes it
        page.get_by_label("Namespace").fill("quaycache")
        page.get_by_label("Upstream", exact=True).fill("ftp://quay.io")
        page.get_by_role("button", name="Save rule").click()
        expect(page.locator(".form-error, .field-error").first).to_contain_text("https://")
        page.get_by_label("Upstream", exact=True).fill("https://quay.io")
        page.get_by_role("button", name="Save rule").click()
        expect(page.locator("[data-mirror=quaycache]")).to_contain_text("quay.io")
        assert mirrors.get_rule("quaycache").upstream == "https://quay.io"
        page.get_by_role("button", name="Remove the rule quaycache").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        expect(page.locator("[data-mirror=quaycache]")).to_have_count(0)
        assert mirrors.get_rule("quaycache") is None
    finally:
        upstream.stop()
        mirrors.remove_rule("hub")
