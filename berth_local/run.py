"""`make run`: the registry on http://127.0.0.1:5000 with moto as its AWS, no account needed.

Environment: PORT (5000), BERTH_HOST (127.0.0.1), BERTH_MOTO_PORT (a free port),
BERTH_MAX_BODY_BYTES (unset: any body size; set: refuse bodies over it as Lambda would),
BERTH_THREADS (8).
"""
from __future__ import annotations

import os
import signal
import sys

from berth_local import backend


def main() -> int:
    host = os.environ.get("BERTH_HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "5000"))
    max_body = os.environ.get("BERTH_MAX_BODY_BYTES")
    endpoint, moto = backend.start_moto_process(int(os.environ.get("BERTH_MOTO_PORT", "0")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        backend.use_endpoint(endpoint)
        from chalicelib.storage.setup import ensure_resources
        ensure_resources()
        from app import app
        from berth_local.gateway import make_wsgi_app
        from berth_local.serve import serve
        wsgi = make_wsgi_app(app, max_body_bytes=int(max_body) if max_body else None)
        print(f"Berth registry: http://{host}:{port}  (moto S3+DynamoDB: {endpoint})", flush=True)
        if max_body:
            print(f"Refusing request bodies over {max_body} bytes, as API Gateway/Lambda would",
                  flush=True)
        serve(wsgi, host, port, threads=int(os.environ.get("BERTH_THREADS", "8")))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
