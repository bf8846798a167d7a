"""Write the front door (chalicelib/frontdoor.py) into what a deployment creates.

Chalice 1.34 cannot express it: its swagger (chalice/deploy/swagger.py) writes the API's
binaryMediaTypes from `app.api.binary_types` (which must stay Chalice's default, see frontdoor.py),
an authorizer without `identityValidationExpression`, and no Gateway Responses. So:

* `chalice package` path (infra/deploy.sh): `python -m berth_local.frontdoor_template TEMPLATE`
  rewrites the packaged template in place: binary media types and the authorizer's token pattern
  in the API definition, and one AWS::ApiGateway::GatewayResponse resource per response of
  frontdoor.GATEWAY_RESPONSES. Those are separate resources because the challenge's realm names
  the API's own host (`${RestAPI}`), which the API's definition cannot reference (a circular
  dependency). API Gateway serves a gateway response only from a deployment made after it, and
  SAM's deployment has no ordering with these resources: infra/deploy.sh therefore deploys the
  stage once more after every stack update (`aws apigateway create-deployment`).
* `chalice deploy` path (berth_local/chalice_deploy.py): `apply_to_rest_api` makes the same
  changes with API Gateway calls, then deploys the stage.

Every value comes from chalicelib/frontdoor.py; nothing is restated here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from chalicelib import frontdoor
from chalicelib.config import DEFAULT_SERVICE

API_RESOURCE = "RestAPI"            # Chalice's logical id of the REST API
API_FUNCTION = "APIHandler"         # ... and of the API function (its environment: BERTH_SERVICE)
DOMAIN_CONDITION = "HasDomain"      # infra/resources.yaml: the custom domain is configured
# The public URL of the API's own host and of the custom domain, as CloudFormation substitutions.
EXECUTE_API_URL = "https://${RestAPI}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
DOMAIN_URL = "https://${DomainName}"
_URL_MARK = "\0URL\0"


def static_header_value(value: str) -> str:
    """A Gateway Response header holding a constant: API Gateway wants it in single quotes."""
    if "'" in value:
        raise ValueError(f"a static Gateway Response header cannot contain a quote: {value!r}")
    return f"'{value}'"


def gateway_response(kind: str, public_url: Any, service: str) -> Dict[str, Any]:
    """One gateway response in API Gateway's terms (statusCode, responseParameters,
    responseTemplates). `public_url` is a URL, or a CloudFormation Fn::Sub text with ${...}
    references (then the header values holding it are Fn::Sub)."""
    spec = frontdoor.GATEWAY_RESPONSES[kind]
    substituted = isinstance(public_url, str) and "${" in public_url
    headers = frontdoor.gateway_response_headers(kind, _URL_MARK if substituted else public_url,
                                                 service)
    parameters: Dict[str, Any] = {}
    for name, value in headers.items():
        quoted = static_header_value(value)
        if substituted and _URL_MARK in value:
            # Literal "${" in Fn::Sub is written "${!"; then the URL's references go in.
            quoted = {"Fn::Sub": quoted.replace("${", "${!").replace(_URL_MARK, public_url)}
        parameters[f"gatewayresponse.header.{name}"] = quoted
    return {"statusCode": str(spec["status"]), "responseParameters": parameters,
            "responseTemplates": {"application/json": spec["body"]}}


def _stage_service(resources: dict) -> tuple:
    """The stage's BERTH_SERVICE and BERTH_PUBLIC_URL, as the API function gets them."""
    variables = (resources.get(API_FUNCTION, {}).get("Properties", {})
                 .get("Environment", {}).get("Variables", {}))
    return variables.get("BERTH_SERVICE", DEFAULT_SERVICE), variables.get("BERTH_PUBLIC_URL")


def _template_public_url(template: dict, public_url: Optional[str]) -> Any:
    if public_url:
        return public_url
    if DOMAIN_CONDITION in template.get("Conditions", {}):
        return None     # one Fn::If per header value, below
    return EXECUTE_API_URL


def gateway_response_resource_name(kind: str) -> str:
    """Logical id of a Gateway Response resource: UNAUTHORIZED -> GatewayResponseUnauthorized."""
    return "GatewayResponse" + "".join(part.capitalize() for part in kind.split("_"))


def _gateway_response_resources(template: dict) -> Dict[str, dict]:
    service, public_url = _stage_service(template["Resources"])
    if not isinstance(service, str) or (public_url is not None and not isinstance(public_url, str)):
        raise ValueError("BERTH_SERVICE and BERTH_PUBLIC_URL must be plain strings in the stage")
    url = _template_public_url(template, public_url)
    resources = {}
    for kind in frontdoor.GATEWAY_RESPONSES:
        if url is not None:
            response = gateway_response(kind, url, service)
        else:
            response = gateway_response(kind, EXECUTE_API_URL, service)
            with_domain = gateway_response(kind, DOMAIN_URL, service)["responseParameters"]
            response["responseParameters"] = {
                name: value if value == with_domain[name] else
                {"Fn::If": [DOMAIN_CONDITION, with_domain[name], value]}
                for name, value in response["responseParameters"].items()}
        resources[gateway_response_resource_name(kind)] = {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "RestApiId": {"Ref": API_RESOURCE},
                "ResponseType": kind,
                "StatusCode": response["statusCode"],
                "ResponseParameters": response["responseParameters"],
                "ResponseTemplates": response["responseTemplates"],
            },
        }
    return resources


def apply_to_template(template: dict) -> dict:
    """Put the front door into a `chalice package` template (changed in place, and returned)."""
    api = template["Resources"][API_RESOURCE]["Properties"]["DefinitionBody"]
    api["x-amazon-apigateway-binary-media-types"] = list(frontdoor.BINARY_MEDIA_TYPES)
    authorizer = api.get("securityDefinitions", {}).get(frontdoor.AUTHORIZER_NAME, {})
    settings = authorizer.get("x-amazon-apigateway-authorizer")
    if settings is None or settings.get("type") != "token":
        raise ValueError(f"the template has no TOKEN authorizer {frontdoor.AUTHORIZER_NAME!r}: "
                         "is it a `chalice package` output of this app?")
    settings["identityValidationExpression"] = frontdoor.AUTHORIZER_TOKEN_PATTERN
    settings["authorizerResultTtlInSeconds"] = frontdoor.AUTHORIZER_TTL_SECONDS
    template["Resources"].update(_gateway_response_resources(template))
    # cfn-lint warns (W3660, on the API) that a resource changing an API defined by a Body may
    # miss the deployment or drift: the reason infra/deploy.sh deploys the stage again after
    # every stack update. Only this check is silenced.
    lint = template.setdefault("Metadata", {}).setdefault("cfn-lint", {}).setdefault("config", {})
    if "W3660" not in lint.setdefault("ignore_checks", []):
        lint["ignore_checks"].append("W3660")
    return template


# -------------------------------------------------------------------- an API made by chalice deploy

def apply_to_rest_api(client, rest_api_id: str, stage: str, public_url: str, service: str) -> None:
    """The same front door on an existing REST API (boto3 `apigateway` client), then a
    deployment of `stage` so that it takes effect."""
    current = set(client.get_rest_api(restApiId=rest_api_id).get("binaryMediaTypes") or [])
    wanted = set(frontdoor.BINARY_MEDIA_TYPES)
    patch = [{"op": "remove", "path": f"/binaryMediaTypes/{_escape(t)}"} for t in sorted(current - wanted)]
    patch += [{"op": "add", "path": f"/binaryMediaTypes/{_escape(t)}"} for t in sorted(wanted - current)]
    if patch:
        client.update_rest_api(restApiId=rest_api_id, patchOperations=patch)
    for authorizer in client.get_authorizers(restApiId=rest_api_id).get("items", []):
        if authorizer["name"] == frontdoor.AUTHORIZER_NAME:
            client.update_authorizer(restApiId=rest_api_id, authorizerId=authorizer["id"],
                                     patchOperations=[
                {"op": "replace", "path": "/identityValidationExpression",
                 "value": frontdoor.AUTHORIZER_TOKEN_PATTERN},
                {"op": "replace", "path": "/authorizerResultTtlInSeconds",
                 "value": str(frontdoor.AUTHORIZER_TTL_SECONDS)}])
            break
    else:
        raise ValueError(f"REST API {rest_api_id} has no authorizer {frontdoor.AUTHORIZER_NAME!r}")
    for kind in frontdoor.GATEWAY_RESPONSES:
        response = gateway_response(kind, public_url, service)
        client.put_gateway_response(restApiId=rest_api_id, responseType=kind, **response)
    client.create_deployment(restApiId=rest_api_id, stageName=stage,
                             description="Berth front door (berth_local.frontdoor_template)")


def _escape(media_type: str) -> str:
    """A media type in a patch path: "/" is written "~1" (JSON pointer)."""
    return media_type.replace("~", "~0").replace("/", "~1")


# -------------------------------------------------------------------- command line

def _load(path: Path) -> dict:
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    import yaml
    return yaml.safe_load(text)


def _dump(path: Path, template: dict) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(template, indent=2) + "\n")
        return
    import yaml
    path.write_text(yaml.safe_dump(template, sort_keys=False, width=1000))


def main(argv: Optional[list] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m berth_local.frontdoor_template TEMPLATE  (sam.yaml or sam.json "
              "written by `chalice package`; rewritten in place)", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        template = _load(path)
        apply_to_template(template)
    except KeyError as exc:
        print(f"frontdoor_template: {path}: not a `chalice package` template of this app "
              f"(no {exc.args[0]!r})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"frontdoor_template: {path}: {exc}", file=sys.stderr)
        return 1
    _dump(path, template)
    return 0


if __name__ == "__main__":
    sys.exit(main())
