"""The registry host's root opens the web console locally.

`/` is outside the API Gateway stage (`/v2`), so the Chalice app never sees it; the local
gateway answers paths outside the stage as API Gateway does. This WSGI wrapper, put in front of
the gateway by `make run`, sends a browser that opens http://HOST:PORT/ to the console instead.
A deployment needs the same at its front door (see README, "Web console and management API").
"""
from __future__ import annotations

from typing import Callable, Iterable

from chalicelib.console.serve import CONSOLE_URL as CONSOLE_PATH   # one place for the path


def console_at_root(app: Callable) -> Callable:
    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("302 Found", [("Location", CONSOLE_PATH), ("Content-Length", "0"),
                                         ("Cache-Control", "no-cache")])
            return [b""]
        return app(environ, start_response)
    return wsgi


__all__ = ["console_at_root", "CONSOLE_PATH"]
