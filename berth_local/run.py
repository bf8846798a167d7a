"""`make run`: the registry on http://127.0.0.1:5000 with moto as its AWS, no account needed.

Environment: PORT (5000), BERTH_HOST (127.0.0.1), BERTH_MOTO_PORT (a free port),
BERTH_GATEWAY (`local`, the default: convenient, any body size; `aws`: the deployed path as API
Gateway and Lambda serve it, front door included, see berth_local/aws_rules.py),
BERTH_FRONT_DOOR (`on`; `off` shows what the deployed path does without the front door),
BERTH_INSTANCES (1: the app runs in the server's process; N: on N worker processes that share
nothing but moto, as a fleet of Lambda instances, see berth_local/fleet.py),
BERTH_MAX_BODY_BYTES (unset: any body size; set: refuse bodies over it as Lambda would),
BERTH_THREADS (8), BERTH_ADMIN_USER (admin) and BERTH_ADMIN_PASSWORD (generated and printed),
BERTH_STATE_DIR (.berth in the project). It writes <state dir>/local.json so that `berth`
commands find this registry without configuration, and keeps the token signing key in
<state dir>/token-key.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from pathlib import Path

from berth_local import backend
from berth_local.malloc import one_malloc_arena

STATE_DIR = Path(os.environ.get("BERTH_STATE_DIR")
                 or Path(__file__).resolve().parent.parent / ".berth")
STATE_FILE = STATE_DIR / "local.json"
KEY_FILE = STATE_DIR / "token-key"


def _token_key_file() -> Path:
    """A signing key that survives restarts (tokens stay valid), readable by the owner only."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    if not KEY_FILE.exists():
        fd = os.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return KEY_FILE


def _ensure_admin() -> tuple:
    from chalicelib.auth import accounts
    username = os.environ.get("BERTH_ADMIN_USER") or "admin"
    password = os.environ.get("BERTH_ADMIN_PASSWORD")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    accounts.ensure_user(username, password, admin=True)
    return username, password if generated else None


def _write_state(url: str, endpoint: str) -> None:
    STATE_FILE.write_text(json.dumps({"registry": url, "aws_endpoint": endpoint,
                                      "pid": os.getpid(), "token_key_file": str(KEY_FILE)}))
    STATE_FILE.chmod(0o600)


def main() -> int:
    one_malloc_arena()
    host = os.environ.get("BERTH_HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    max_body = os.environ.get("BERTH_MAX_BODY_BYTES")
    mode = os.environ.get("BERTH_GATEWAY", "local").strip().lower() or "local"
    front_door = os.environ.get("BERTH_FRONT_DOOR", "on").strip().lower() not in ("off", "0", "false", "no")
    if mode not in ("local", "aws"):
        print(f"BERTH_GATEWAY must be `local` or `aws`, not {mode!r}", file=sys.stderr)
        return 2
    instances = os.environ.get("BERTH_INSTANCES", "1").strip() or "1"
    if not instances.isdigit() or not 1 <= int(instances) <= 64:
        print(f"BERTH_INSTANCES must be a number from 1 to 64, not {instances!r}", file=sys.stderr)
        return 2
    fleet = None
    endpoint, moto = backend.start_moto_process(int(os.environ.get("BERTH_MOTO_PORT", "0")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    url = f"http://{host}:{port}"
    try:
        backend.use_endpoint(endpoint)
        os.environ.setdefault("BERTH_TOKEN_KEY_FILE", str(_token_key_file()))
        # upstream credentials of mirror rules (`berth mirror add --credentials-stdin`)
        os.environ.setdefault("BERTH_MIRROR_CREDENTIALS_DIR", str(STATE_DIR / "mirror-credentials"))
        from chalicelib.storage.setup import ensure_resources
        ensure_resources()
        admin, generated_password = _ensure_admin()
        from app import app
        from berth_local.gateway import make_wsgi_app
        from berth_local.root import console_at_root
        from berth_local.serve import serve
        if int(instances) > 1:
            from berth_local.fleet import Fleet
            fleet = Fleet(int(instances))
        wsgi = make_wsgi_app(app, mode=mode, max_body_bytes=int(max_body) if max_body else None,
                             front_door=front_door, fleet=fleet,
                             public_url=os.environ.get("BERTH_PUBLIC_URL") or url)
        # aws mode is the execute-api host, whose root is outside the stage (a custom domain's
        # root redirects like this: ConsoleRootApi in infra/resources.yaml)
        if mode == "local":
            wsgi = console_at_root(wsgi)
        _write_state(url, endpoint)
        print(f"Berth registry: {url}  (moto S3+DynamoDB: {endpoint})", flush=True)
        if generated_password:
            print(f"Admin user: {admin}  password: {generated_password}  (generated; set "
                  "BERTH_ADMIN_PASSWORD to choose it)", flush=True)
        else:
            print(f"Admin user: {admin}  (password from BERTH_ADMIN_PASSWORD)", flush=True)
        if mode == "aws":
            print("Gateway: aws (API Gateway + Lambda rules, front door "
                  f"{'on' if front_door else 'OFF'}): big layers need `berth proxy`", flush=True)
        if max_body:
            print(f"Refusing request bodies over {max_body} bytes, as API Gateway/Lambda would",
                  flush=True)
        if fleet is not None:
            print(f"Lambda instances: {fleet.size} worker processes (pids "
                  f"{' '.join(map(str, fleet.pids()))})", flush=True)
        serve(wsgi, host, port, threads=int(os.environ.get("BERTH_THREADS", "8")),
              guard_bodies=True)
    finally:
        if fleet is not None:
            fleet.close()
        if STATE_FILE.exists() and json.loads(STATE_FILE.read_text()).get("pid") == os.getpid():
            STATE_FILE.unlink()
        moto.terminate()
        moto.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
