"""Why a token does not allow an action on a repository, told so the user knows what to do next.

Only called on the refusal path (a 401 `insufficient_scope`), so the database reads here cost
nothing on an allowed request.

What a refusal may reveal (the rule):
- An anonymous caller learns nothing: every refusal reads "sign in", whether the namespace
  exists, is private or is missing.
- A signed-in caller learns whether the *namespace* exists. That is no secret from them:
  namespaces are globally unique, and activating one (console or `berth namespace add`) already
  answers "already taken" to anyone signed in. So a missing namespace gets NAME_UNKNOWN with how
  to activate it, and someone else's namespace gets DENIED with whom to ask.
- Nobody outside a namespace learns which *repositories* are in it: the messages name the
  namespace only, and are the same whether the repository exists or not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from chalicelib import oci
from chalicelib.auth import accounts


@dataclass(frozen=True)
class Refusal:
    code: str        # chalicelib/errors.py code: DENIED or NAME_UNKNOWN
    message: str     # one line, no double quotes (it also goes into WWW-Authenticate)


def explain(subject: Optional[str], repository: str, action: str, registry_url: str) -> Refusal:
    """The refusal for `subject` (None: anonymous) wanting `action` on `repository`."""
    host = registry_url.split("://", 1)[-1]
    if not subject:
        return Refusal("DENIED", f"requested access to the resource is denied: sign in first "
                                 f"(docker login {host})")
    namespace = oci.namespace_of(repository)
    user = accounts.get_user(subject)
    admin = user is not None and user.admin
    if accounts.get_namespace(namespace) is None:
        if admin:
            return Refusal("NAME_UNKNOWN", f"namespace '{namespace}' does not exist: as an admin, "
                           f"push with your password or a push access token and it is created")
        return Refusal("NAME_UNKNOWN", f"namespace '{namespace}' does not exist: activate it in "
                       f"the console ({registry_url}/v2/_berth/console/) or ask an admin to run "
                       f"'berth namespace add {namespace} --owner {subject}', then push again")
    role = "admin" if admin else accounts.role_in(subject, namespace)
    if role == "admin" or (role is not None and action in accounts.ROLES[role]):
        return Refusal("DENIED", f"your login may not {action} in '{namespace}' although your "
                       f"role ({role}) allows it: it used a pull-only access token, or the client "
                       f"kept a token it asked for with fewer rights; log in again with your "
                       f"password or a push access token")
    if role is not None:
        return Refusal("DENIED", f"your role in namespace '{namespace}' ({role}) does not allow "
                       f"{action}: ask its owner for the push role")
    return Refusal("DENIED", f"namespace '{namespace}' belongs to another account: ask its owner "
                   f"to make you a member (berth namespace member {namespace} {subject} "
                   f"--role pull|push)")
