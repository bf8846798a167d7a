"""GET /v2/_berth/api/openapi.json: an OpenAPI 3 document of the management API, built from the
endpoints as they are registered (chalicelib/api/manage/core.py ENDPOINTS) plus the schemas here."""
from __future__ import annotations

import re
from functools import lru_cache

from chalicelib.api.manage.core import ENDPOINTS, endpoint
from chalicelib.api.manage.repos import DESCRIPTION_MAX
from chalicelib.api.router import Request

_STRING = {"type": "string"}
_BOOL = {"type": "boolean"}
_NUMBER = {"type": "number"}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": _STRING, "message": _STRING,
            "field": {"type": "string", "nullable": True,
                      "description": "the request field the error is about"}}}}},
    "RepositoryCreate": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "example": "alice/app",
                 "description": "<namespace>/<name>, distribution's name grammar"},
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
        "visibility": {"type": "string", "enum": ["private", "public"],
                       "default": "private"}}},
    "RepositoryUpdate": {"type": "object", "properties": {
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
        "visibility": {"type": "string", "enum": ["private", "public"]}}},
    "Repository": {"type": "object", "properties": {
        "name": _STRING, "namespace": _STRING, "description": _STRING,
        "visibility": {"type": "string", "enum": ["private", "public"]},
        "namespace_public": _BOOL, "created": _NUMBER, "tag_count": {"type": "integer"},
        "manifest_count": {"type": "integer"},
        "size": {"type": "integer", "description": "bytes of the manifests and of the blobs "
                 "they reference"},
        "last_push": {"type": "number", "nullable": True, "description": "Unix time"},
        "stats_complete": _BOOL, "pull_command": _STRING, "latest_tag": _STRING,
        "role": _STRING, "permissions": {"type": "array", "items": _STRING},
        "can_edit": _BOOL, "can_delete": _BOOL, "can_change_visibility": _BOOL}},
    "Tag": {"type": "object", "properties": {
        "name": _STRING, "digest": _STRING, "media_type": _STRING,
        "kind": {"type": "string", "enum": ["image", "index", "artifact"]},
        "size": {"type": "integer"}, "platforms": {"type": "array", "items": _STRING},
        "pushed": _NUMBER, "pull_command": _STRING}},
    "NamespaceCreate": {"type": "object", "required": ["name"], "properties": {
        "name": _STRING, "public": _BOOL}},
    "PasswordChange": {"type": "object", "required": ["current_password", "new_password"],
                       "properties": {"current_password": _STRING,
                                      "new_password": {"type": "string", "minLength": 8}}},
    "TokenCreate": {"type": "object", "required": ["name", "password"], "properties": {
        "name": {"type": "string", "maxLength": 100},
        "password": {"type": "string", "description": "your password, asked again: a stolen "
                     "session cannot mint a lasting token"},
        "scope": {"type": "string", "enum": ["pull", "push"], "default": "pull"}}},
    "UserCreate": {"type": "object", "required": ["username", "password"], "properties": {
        "username": _STRING, "password": {"type": "string", "minLength": 8}, "admin": _BOOL}},
    "UserUpdate": {"type": "object", "properties": {"disabled": _BOOL, "admin": _BOOL}},
    "MirrorRule": {"type": "object", "required": ["upstream"], "properties": {
        "upstream": {"type": "string", "example": "https://registry-1.docker.io"},
        "prefix": {"type": "string", "example": "library/"}, "public": _BOOL,
        "tag_ttl": {"type": "string", "example": "10m"},
        "credentials": {"type": "object", "description": "write-only; stored in SSM",
                        "properties": {"username": _STRING, "password": _STRING}}}},
    "SignIn": {"type": "object", "required": ["username", "password"], "properties": {
        "username": _STRING, "password": _STRING}},
    "SignUp": {"type": "object", "required": ["username", "password", "namespace"],
               "properties": {"username": _STRING, "password": {"type": "string",
                                                                "minLength": 8},
                              "namespace": _STRING,
                              "invite": {"type": "string",
                                         "description": "required when BERTH_SIGNUP=invite"}}},
}


@lru_cache(maxsize=1)
def document() -> dict:
    paths: dict = {}
    for e in ENDPOINTS:
        path = "/v2/_berth/api/" + e["template"]
        op: dict = {"summary": e["summary"], "responses": {
            str(e["status"]): {"description": "success",
                               "content": {"application/json": {"schema": {"type": "object"}}}},
            "4XX": {"description": "refused",
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}}}}
        if e["public"]:
            op["security"] = []
        params = [{"name": name, "in": "path", "required": True, "schema": _STRING}
                  for name in re.findall(r"{(\w+)}", e["template"])]
        params += [{"name": name, "in": "query", "required": False, "schema": _STRING}
                   for name in e["query"]]
        if params:
            op["parameters"] = params
        if e["body"]:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{e['body']}"}}}}
        paths.setdefault(path, {})[e["method"].lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Berth management API", "version": "1",
                 "description": "Repositories, tags, namespaces and accounts of a Berth registry. "
                 "Get a bearer token from GET /v2/_berth/token?service=berth&scope=berth:api:* "
                 "with HTTP basic credentials (your password, not an access token); it is "
                 "valid for an hour and your rights are checked on every call."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
    }


@endpoint("GET", r"openapi\.json", "openapi.json", "This document", public=True)
def openapi(request: Request) -> dict:
    return document()
