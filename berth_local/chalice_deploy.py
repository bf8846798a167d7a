"""`chalice deploy` for a quick stage: `infra/chalice-deploy.sh STAGE` (docs/deploy.md).

`chalice deploy` creates the API, the functions, their roles and the schedule, but not the table,
the bucket or the token key, and it takes IAM policies and environment variables literally from
.chalice/config.json, where no account-specific name belongs. So, in order:

1. the token key: an SSM SecureString /berth-STAGE/token-key, created once (CloudFormation cannot
   create SecureString parameters);
2. a small resources stack named berth-STAGE: the table, the bucket and its policy exactly as
   infra/resources.yaml defines them (taken from it, not restated), and the functions' log groups
   under the names `chalice deploy` gives the functions;
3. a generated Chalice project in .berth/chalice-deploy/STAGE/ (git-ignored): the app, and a
   .chalice/config.json that is the committed one plus, per function, the environment the stack's
   outputs give (BERTH_TABLE, BERTH_BUCKET, BERTH_TOKEN_KEY_PARAM, and the mirror's
   BERTH_MIRROR_CREDENTIALS_PARAM, BERTH_MIRROR_COPY_FUNCTION, only where the function reads it)
   and concrete policy files: .chalice/policy-*.json with every CloudFormation reference
   resolved against the stack. Chalice keeps its deployed state there (.chalice/deployed/);
4. `chalice --project-dir .berth/chalice-deploy/STAGE deploy --stage STAGE`;
5. the front door (berth_local.frontdoor_template.apply_to_rest_api): binary media types, the
   authorizer's token pattern, the Gateway Responses, and a new deployment of the stage.

Every step is idempotent: run it again after each change. A stage is deployed either this way or
with infra/deploy.sh, never both (they share the stack name, so the second one fails cleanly).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from berth_local import frontdoor_template
from chalicelib.config import DEFAULT_SERVICE

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("dev", "prod")
# What the stack takes from infra/resources.yaml as it is.
SHARED_RESOURCES = ("Table", "BlobBucket", "BlobBucketPolicy")
# Chalice function name (config.json `lambda_functions`) -> log group logical id (the policies
# refer to it) and the settings that function reads.
FUNCTIONS = {
    "api_handler": ("ApiLogGroup", ("BERTH_TABLE", "BERTH_BUCKET", "BERTH_TOKEN_KEY_PARAM",
                                    "BERTH_MIRROR_CREDENTIALS_PARAM", "BERTH_MIRROR_COPY_FUNCTION")),
    "gc": ("GcLogGroup", ("BERTH_TABLE", "BERTH_BUCKET")),
    "mirror_copy": ("MirrorCopyLogGroup", ("BERTH_TABLE", "BERTH_BUCKET",
                                           "BERTH_MIRROR_CREDENTIALS_PARAM")),
    "registry_auth": ("RegistryAuthLogGroup", ("BERTH_TOKEN_KEY_PARAM",)),
}
# Functions the policies refer to by logical id (the API invokes the mirror copy function).
POLICY_FUNCTIONS = {"MirrorCopy": "mirror_copy"}
LOG_RETENTION_DAYS = 30


class DeployError(Exception):
    """A step failed: the message says which and what to do."""


# -------------------------------------------------------------------- names

def stack_name(stage: str) -> str:
    return f"berth-{stage}"


def key_parameter(stage: str) -> str:
    return f"/{stack_name(stage)}/token-key"


def mirror_credentials_prefix(stage: str) -> str:
    return f"/{stack_name(stage)}/mirror/"


def project_dir(stage: str) -> Path:
    return ROOT / ".berth" / "chalice-deploy" / stage


def function_name(app_name: str, stage: str, function: str) -> str:
    """The name `chalice deploy` gives a function (chalice/deploy/appgraph.py)."""
    return f"{app_name}-{stage}" if function == "api_handler" else f"{app_name}-{stage}-{function}"


# -------------------------------------------------------------------- the resources stack

class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt ...) as their long forms."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def resources_template(stage: str, app_name: str) -> dict:
    """The resources stack's template: infra/resources.yaml's table, bucket and bucket policy,
    and a log group per function under its `chalice deploy` name."""
    merged = yaml.load((ROOT / "infra" / "resources.yaml").read_text(), Loader=_CfnLoader)
    resources = {name: merged["Resources"][name] for name in SHARED_RESOURCES}
    for function, (log_group, _) in FUNCTIONS.items():
        resources[log_group] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/aws/lambda/{function_name(app_name, stage, function)}",
            "RetentionInDays": LOG_RETENTION_DAYS}}
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"Berth {stage}: the resources `chalice deploy` does not create "
                           "(berth_local/chalice_deploy.py)",
            "Resources": resources,
            "Outputs": {"TableName": {"Value": {"Ref": "Table"}},
                        "BucketName": {"Value": {"Ref": "BlobBucket"}},
                        "TokenKeyParameterName": {"Value": key_parameter(stage)}}}


def deploy_stack(cloudformation, stack: str, template: dict) -> Dict[str, Dict[str, str]]:
    """Create or update the stack and wait; return logical id -> {type, physical id}."""
    body = json.dumps(template)
    status = _stack_status(cloudformation, stack)
    if status == "ROLLBACK_COMPLETE":     # a failed first creation: it holds nothing, start over
        print(f"{stack}: its first creation failed (ROLLBACK_COMPLETE); deleting it to create it again")
        cloudformation.delete_stack(StackName=stack)
        cloudformation.get_waiter("stack_delete_complete").wait(StackName=stack)
        status = None
    tags = [{"Key": "app", "Value": "berth"}, {"Key": "stage", "Value": stack.split("-", 1)[1]}]
    if status is None:
        cloudformation.create_stack(StackName=stack, TemplateBody=body, Tags=tags)
        waiter = "stack_create_complete"
    else:
        try:
            cloudformation.update_stack(StackName=stack, TemplateBody=body, Tags=tags)
        except cloudformation.exceptions.ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
            waiter = None
        else:
            waiter = "stack_update_complete"
    if waiter:
        try:
            cloudformation.get_waiter(waiter).wait(StackName=stack)
        except Exception as exc:
            raise DeployError(f"stack {stack} did not deploy ({exc}); its events say why: "
                              f"aws cloudformation describe-stack-events --stack-name {stack}") from None
    found = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
    return {r["LogicalResourceId"]: {"type": r["ResourceType"], "physical": r["PhysicalResourceId"]}
            for page in found for r in page["StackResourceSummaries"] if r.get("PhysicalResourceId")}


def _stack_status(cloudformation, stack: str) -> Optional[str]:
    try:
        return cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise


def ensure_token_key(ssm, name: str, stage: str) -> None:
    """Create the signing key once (32 random bytes, hex); never print or change it."""
    try:
        ssm.get_parameter(Name=name)
        return
    except ssm.exceptions.ParameterNotFound:
        pass
    ssm.put_parameter(Name=name, Type="SecureString", Value=secrets.token_hex(32),
                      Description=f"Berth {stage}: token signing key (HS256)")


# -------------------------------------------------------------------- CloudFormation references

class StackValues:
    """Resolves the references of a policy file (Ref, Fn::GetAtt ...Arn, Fn::Sub) against a
    deployed stack, as CloudFormation would inside it. `resources`: logical id -> {type,
    physical}. tests/test_deploy.py resolves whole templates with a subclass."""

    ARN = {"AWS::DynamoDB::Table": "arn:{p}:dynamodb:{r}:{a}:table/{n}",
           "AWS::S3::Bucket": "arn:{p}:s3:::{n}",
           "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{n}:*",
           "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{n}"}

    def __init__(self, resources: Dict[str, Dict[str, str]], stack: str, region: str,
                 account: str, partition: str) -> None:
        self.resources = resources
        self.pseudo = {"AWS::StackName": stack, "AWS::Region": region, "AWS::AccountId": account,
                       "AWS::Partition": partition,
                       "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"}

    def __call__(self, node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1:
                (key, value), = node.items()
                if key == "Ref":
                    return self.ref(value)
                if key == "Fn::GetAtt":
                    name, attribute = value if isinstance(value, list) else value.split(".", 1)
                    return self.get_att(name, attribute)
                if key == "Fn::Sub":
                    return self.sub(value)
                if key.startswith("Fn::"):
                    return self.other_function(key, value)
            return {k: self(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self(v) for v in node]
        return node

    def other_function(self, key: str, value: Any) -> Any:
        raise DeployError(f"{key} in a policy file: not supported here")

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name not in self.resources:
            raise DeployError(f"a policy refers to {name}, which the resources stack does not have")
        return self.resources[name]["physical"]

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources.get(name, {}).get("type")
        if attribute != "Arn" or kind not in self.ARN:
            raise DeployError(f"a policy refers to {name}.{attribute}: not supported here")
        p, r, a = (self.pseudo[k] for k in ("AWS::Partition", "AWS::Region", "AWS::AccountId"))
        return self.ARN[kind].format(p=p, r=r, a=a, n=self.ref(name))

    def sub(self, value: Any) -> str:
        text, variables = (value, {}) if isinstance(value, str) else value

        def one(match: "re.Match[str]") -> str:
            name = match.group(1)
            if name in variables:
                return str(self(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))
        return re.sub(r"\$\{([^}!][^}]*)\}", one, text).replace("${!", "${")


# -------------------------------------------------------------------- the generated project

def write_project(stage: str, values: StackValues, outputs: Dict[str, str], target: Path) -> Path:
    """The app and its stage configuration with concrete values, in `target` (by default
    .berth/chalice-deploy/STAGE). Chalice's deployed state (.chalice/deployed/) there is kept
    from run to run."""
    chalice_dir = target / ".chalice"
    chalice_dir.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(ROOT / name, target / name)
    shutil.rmtree(target / "chalicelib", ignore_errors=True)
    shutil.copytree(ROOT / "chalicelib", target / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage_config = config["stages"][stage]
    for function, (_, settings) in FUNCTIONS.items():
        function_config = stage_config.setdefault("lambda_functions", {}).setdefault(function, {})
        policy_name = function_config.get("iam_policy_file")
        if not policy_name:
            raise DeployError(f".chalice/config.json: stage {stage} has no iam_policy_file for {function}")
        policy = json.loads((ROOT / ".chalice" / policy_name).read_text())
        (chalice_dir / policy_name).write_text(json.dumps(values(policy), indent=2) + "\n")
        environment = function_config.setdefault("environment_variables", {})
        environment.update({name: outputs[name] for name in settings})
    (chalice_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return target


def deployed_rest_api(target: Path, stage: str) -> Dict[str, str]:
    """The REST API `chalice deploy` recorded: {rest_api_id, rest_api_url}."""
    state = json.loads((target / ".chalice" / "deployed" / f"{stage}.json").read_text())
    for resource in state.get("resources", []):
        if resource.get("resource_type") == "rest_api":
            return resource
    raise DeployError(f"chalice deploy recorded no REST API in {target}/.chalice/deployed/{stage}.json")


def public_url_of(rest_api_url: str) -> str:
    """https://ID.execute-api.REGION.amazonaws.com/v2/ -> https://ID.execute-api.REGION.amazonaws.com"""
    match = re.match(r"^(https://[^/]+)", rest_api_url)
    if not match:
        raise DeployError(f"unexpected REST API URL from chalice: {rest_api_url!r}")
    return match.group(1)


# -------------------------------------------------------------------- the whole path

def deploy(stage: str, chalice: str, target: Optional[Path] = None) -> Dict[str, str]:
    import boto3
    # as infra/deploy.sh: AWS_REGION, else AWS_DEFAULT_REGION (botocore reads only the latter)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise DeployError("set AWS_REGION (or AWS_DEFAULT_REGION) to the region to deploy to")
    session = boto3.session.Session(region_name=region)
    identity = session.client("sts").get_caller_identity()
    account, partition = identity["Account"], identity["Arn"].split(":")[1]
    stack = stack_name(stage)
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    app_name = config["app_name"]
    print(f"deploying stage {stage} with chalice deploy: resources stack {stack}, "
          f"account {account}, region {region}")

    ensure_token_key(session.client("ssm"), key_parameter(stage), stage)
    resources = deploy_stack(session.client("cloudformation"), stack,
                             resources_template(stage, app_name))
    for logical, function in POLICY_FUNCTIONS.items():     # made by chalice deploy, not the stack
        resources[logical] = {"type": "AWS::Lambda::Function",
                              "physical": function_name(app_name, stage, function)}
    values = StackValues(resources, stack, region, account, partition)
    outputs = {"BERTH_TABLE": values.ref("Table"), "BERTH_BUCKET": values.ref("BlobBucket"),
               "BERTH_TOKEN_KEY_PARAM": key_parameter(stage),
               "BERTH_MIRROR_CREDENTIALS_PARAM": mirror_credentials_prefix(stage),
               "BERTH_MIRROR_COPY_FUNCTION": values.ref("MirrorCopy")}
    target = write_project(stage, values, outputs, target or project_dir(stage))

    run = subprocess.run([chalice, "--project-dir", str(target), "deploy", "--stage", stage],
                         env=dict(os.environ, AWS_REGION=region, AWS_DEFAULT_REGION=region))
    if run.returncode != 0:
        raise DeployError(f"chalice deploy failed (exit {run.returncode}); its output is above")

    api = deployed_rest_api(target, stage)
    public_url = public_url_of(api["rest_api_url"])
    stage_env = {**config.get("environment_variables", {}),
                 **config["stages"][stage].get("environment_variables", {})}
    frontdoor_template.apply_to_rest_api(
        session.client("apigateway"), api["rest_api_id"],
        config["stages"][stage].get("api_gateway_stage", "api"),
        stage_env.get("BERTH_PUBLIC_URL") or public_url,
        stage_env.get("BERTH_SERVICE", DEFAULT_SERVICE))
    host = public_url.split("://", 1)[1]
    print(f"registry: {host}   (docker login {host})")
    return {"host": host, "rest_api_id": api["rest_api_id"], "project_dir": str(target)}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/chalice-deploy.sh",
                                     description="Deploy a Berth stage with `chalice deploy`.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--project-dir", type=Path, default=None,
                        help="where the generated Chalice project and its deployed state live "
                             "(default: .berth/chalice-deploy/STAGE)")
    args = parser.parse_args(argv)
    chalice = os.environ.get("CHALICE") or str(Path(sys.executable).parent / "chalice")
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        deploy(args.stage, chalice, args.project_dir)
    except DeployError as exc:
        print(f"chalice-deploy: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:     # credentials, permissions, throttling...
        print(f"chalice-deploy: AWS refused a step: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
