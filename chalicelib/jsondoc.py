"""Parsing JSON sent by clients (manifests, management API bodies): one rule for every parser.

`json.loads` raises RecursionError, not ValueError, on deeply nested input ("[[[[…"), and a
document nested just under that limit can still break whatever walks it later (a JSON attribute
written to DynamoDB, json.dumps of an answer). So every client document goes through `loads`,
which turns both into ValueError and refuses nesting deeper than MAX_DEPTH.
"""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64      # OCI manifests nest 4 levels (index > descriptor > platform > features)


class InvalidJSON(ValueError):
    """Not a JSON document this service accepts; the message is fit for the client."""


def loads(raw: bytes) -> Any:
    """The JSON document in `raw` (UTF-8); InvalidJSON if malformed or nested too deeply."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidJSON("not valid UTF-8 JSON") from None
    except RecursionError:
        raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_depth(doc)
    return doc


def _check_depth(doc: Any) -> None:
    """Iterative (a recursive walk would hit the very limit it guards against)."""
    pending = [(doc, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, (dict, list)))
