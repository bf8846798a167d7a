"""Mirror rules in the management API: admins create, list and remove them; credentials are
write-only and go to SSM (moto), never into the table or an answer."""
from __future__ import annotations

import json

import boto3
import pytest

from tests.conftest import MOTO_ENDPOINT
from tests.support.registry_api import ADMIN
from tests.test_manage_api import Api, new_user, refused

SECRET = "upstream-pass-w0rd"


@pytest.fixture
def ssm_store(monkeypatch):
    monkeypatch.delenv("BERTH_MIRROR_CREDENTIALS_DIR", raising=False)
    monkeypatch.setenv("BERTH_MIRROR_CREDENTIALS_PARAM", "/berth-test/mirror/")
    return boto3.client("ssm", endpoint_url=MOTO_ENDPOINT, region_name="us-east-1")


def test_admins_manage_rules_and_credentials_go_to_ssm(registry, ssm_store):
    admin = Api(registry, *ADMIN)
    r = admin.put("mirrors/corpcache", {"upstream": "https://registry.example.com",
                                        "prefix": "team/", "public": False, "tag_ttl": "30s",
                                        "credentials": {"username": "bot", "password": SECRET}})
    assert r.status_code == 200, r.text
    assert r.json()["mirror"] == {"namespace": "corpcache", "upstream":
                                  "https://registry.example.com", "prefix": "team/",
                                  "public": False, "tag_ttl": 30.0, "credentials": True}
    stored = ssm_store.get_parameter(Name="/berth-test/mirror/corpcache", WithDecryption=True)
    assert stored["Parameter"]["Type"] == "SecureString"
    assert json.loads(stored["Parameter"]["Value"]) == {"username": "bot", "password": SECRET}

    listing = admin.get("mirrors")
    assert listing.status_code == 200 and SECRET not in listing.text
    rules = {m["namespace"]: m for m in listing.json()["mirrors"]}
    assert rules["library"]["upstream"] == "https://registry-1.docker.io"      # the default
    assert rules["library"]["public"] and rules["library"]["prefix"] == "library/"
    assert rules["corpcache"]["can_edit"] and rules["corpcache"]["images"] == []
    assert listing.json()["daemon_json"] == {"registry-mirrors": [registry]}

    from chalicelib.storage.models import TableModel
    dump = json.dumps([i for i in TableModel.scan()], default=lambda o: o.attribute_values)
    assert "corpcache" in dump and SECRET not in dump

    assert admin.delete("mirrors/corpcache").status_code == 204
    with pytest.raises(ssm_store.exceptions.ParameterNotFound):
        ssm_store.get_parameter(Name="/berth-test/mirror/corpcache")
    refused(admin.delete("mirrors/corpcache"), 404)


def test_rules_refuse_bad_input_and_non_admins(registry, ssm_store):
    admin = Api(registry, *ADMIN)
    refused(admin.put("mirrors/x1", {"upstream": "ftp://example.com"}), 400)
    refused(admin.put("mirrors/x1", {"upstream": "https://example.com/some/path"}), 400)
    refused(admin.put("mirrors/x1", {"upstream": "https://example.com", "tag_ttl": "soon"}),
            400, field="tag_ttl")
    refused(admin.put("mirrors/x1", {}), 400, field="upstream")
    user = Api(registry, new_user())
    refused(user.put("mirrors/x1", {"upstream": "https://example.com"}), 403)
    refused(user.delete("mirrors/library"), 403)
    visible = [m["namespace"] for m in user.get("mirrors").json()["mirrors"]]
    assert "library" in visible and not any(m["can_edit"] for m in user.get("mirrors").json()["mirrors"])
