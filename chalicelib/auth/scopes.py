"""Scopes and grants of distribution's token-auth spec: `repository:<name>:<actions>`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional

PULL, PUSH, DELETE = "pull", "push", "delete"
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE})
CATALOG = ("registry", "catalog", "*")
API = ("berth", "api", "*")     # the management API and web console (chalicelib/api/manage)


@dataclass(frozen=True)
class Scope:
    type: str          # "repository" or "registry"
    name: str
    actions: FrozenSet[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scope(raw: str) -> Optional[Scope]:
    """`repository:ns/img:pull,push` -> Scope; None for anything malformed (ignored, per spec)."""
    parts = raw.split(":")
    if len(parts) < 3:
        return None
    kind, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    if kind.startswith("repository("):          # "repository(plugin)" class suffix
        kind = "repository"
    if kind not in ("repository", "registry", "berth") or not name:
        return None
    return Scope(kind, name, frozenset(a for a in actions.split(",") if a))


@dataclass
class Grants:
    """What a verified token allows: repository name -> actions (plus the catalog)."""
    subject: Optional[str] = None
    repositories: Dict[str, FrozenSet[str]] = field(default_factory=dict)
    catalog: bool = False
    api: bool = False      # `berth:api:*`: may call the management API (rights checked per call)
    session_version: Optional[int] = None   # claim `sv` of a console session

    def allows(self, repository: str, action: str) -> bool:
        return action in self.repositories.get(repository, frozenset())

    @classmethod
    def from_claim(cls, subject: Optional[str], access: Iterable[dict]) -> "Grants":
        grants = cls(subject=subject or None)
        for entry in access or []:
            if not isinstance(entry, dict):
                continue
            kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
            if not isinstance(name, str) or not isinstance(actions, list):
                continue
            if kind == "repository":
                grants.repositories[name] = frozenset(
                    a for a in actions if isinstance(a, str)) | grants.repositories.get(
                    name, frozenset())
            elif kind == "registry" and name == "catalog" and "*" in actions:
                grants.catalog = True
            elif (kind, name) == API[:2] and "*" in actions:
                grants.api = True
        return grants


def access_claim(granted: List[Scope]) -> List[dict]:
    return [{"type": s.type, "name": s.name, "actions": sorted(s.actions)} for s in granted]
