"""Cold start: import time of app.py in a fresh interpreter, against the floor of a bare Chalice
app that imports boto3 (what every Chalice+AWS Lambda pays), median of N runs each, alternated.

usage: coldstart.py [--runs N] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BARE_APP = '''import boto3
from chalice import Chalice
app = Chalice(app_name="bare")


@app.route("/")
def index():
    return {}
'''
TIMER = "import time; t = time.perf_counter(); import app; print(time.perf_counter() - t)"


def import_seconds(cwd: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    out = subprocess.run([sys.executable, "-c", TIMER], cwd=cwd, env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as bare:
        with open(os.path.join(bare, "app.py"), "w") as f:
            f.write(BARE_APP)
        import_seconds(bare), import_seconds(ROOT)            # compile .pyc files first
        berth, floor = [], []
        for _ in range(args.runs):
            berth.append(import_seconds(ROOT))
            floor.append(import_seconds(bare))
    result = {"berth_import_ms": round(statistics.median(berth) * 1000, 1),
              "bare_chalice_boto3_import_ms": round(statistics.median(floor) * 1000, 1)}
    result["ratio"] = round(result["berth_import_ms"] / result["bare_chalice_boto3_import_ms"], 2)
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
