"""Write bench/RESULTS.md from a `make bench` run: Berth against docker-registry, as ratios."""
import json
import os
import platform
import sys
from datetime import datetime, timezone

TARGETS = {("large", "push"): 1.5, ("large", "pull"): 1.5, ("large", "repush"): 2.0}
MEMORY_TARGET_MIB = 300


def load(path):
    with open(path) as f:
        return json.load(f)


def main() -> None:
    out = sys.argv[1]
    berth = load(os.path.join(out, "berth.json"))
    ref = load(os.path.join(out, "distribution-s3.json"))
    mem = load(os.path.join(out, "berth-peak-rss.json"))
    lines = ["# Benchmark: Berth (local mode) vs docker-registry 2.8 (S3 on moto)", "",
             f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, "
             f"{platform.python_implementation()} {platform.python_version()}; "
             f"bench/compare.py reps={berth['meta'].get('reps')}. Seconds are medians; ratio = Berth / "
             "docker-registry (lower is better).", "",
             "| image | phase | Berth s | docker-registry s | ratio | target |",
             "|---|---|---:|---:|---:|---|"]
    for image, result in berth.get("transfer", {}).items():
        for phase in ("push", "repush", "pull"):
            b = result[phase]["median"]
            d = ref["transfer"][image][phase]["median"]
            target = TARGETS.get((image, phase))
            verdict = "" if target is None else (f"≤ {target}× " + ("met" if b / d <= target
                                                                   else "MISSED"))
            lines.append(f"| {image} | {phase} | {b:.2f} | {d:.2f} | {b / d:.2f} | {verdict} |")
    lines += ["", "| metadata endpoint | tool | conns | Berth req/s | docker-registry req/s | ratio |",
              "|---|---|---:|---:|---:|---:|"]
    ref_rows = {(r["endpoint"], r["tool"], r["connections"]): r for r in ref.get("metadata") or []}
    for r in berth.get("metadata") or []:
        other = ref_rows.get((r["endpoint"], r["tool"], r["connections"]))
        if other and other["rps"]:
            lines.append(f"| {r['endpoint']} | {r['tool']} | {r['connections']} | {r['rps']:.0f} | "
                         f"{other['rps']:.0f} | {r['rps'] / other['rps']:.2f} |")
    verdict = "met" if mem["peak_rss_mib"] < MEMORY_TARGET_MIB else "MISSED"
    lines += ["", f"Registry process peak RSS over the whole Berth run (push, re-push, pull, "
              f"metadata load; moto excluded): **{mem['peak_rss_mib']} MiB** "
              f"(VmHWM {mem['vmhwm_mib']} MiB; target < {MEMORY_TARGET_MIB} MiB: {verdict})."]
    auth_path = os.path.join(out, "auth.json")
    if os.path.exists(auth_path):
        auth = load(auth_path)
        verdict = "met" if auth["ratio"] >= 0.8 else "MISSED"
        lines += ["", "Token verification (the Chalice app called as Lambda calls it, moto in-process): "
                  f"manifest GET {auth['manifest_get_rps_with_token']} req/s with a Bearer token vs "
                  f"{auth['manifest_get_rps_without_auth']} req/s with the authorization step "
                  f"switched off: **{auth['ratio']}×** (target ≥ 0.8×: {verdict}). A token request with "
                  f"a password takes {auth['first_login_seconds']} s the first time (scrypt 2^15) "
                  f"and {auth['repeated_login_seconds_median']} s when repeated within a minute."]
    cold_path = os.path.join(out, "coldstart.json")
    if os.path.exists(cold_path):
        cold = load(cold_path)
        verdict = "met" if cold["ratio"] <= 1.5 else "MISSED"
        lines += ["", f"Cold start: importing app.py takes {cold['berth_import_ms']} ms against "
                  f"{cold['bare_chalice_boto3_import_ms']} ms for a bare Chalice app importing boto3: "
                  f"**{cold['ratio']}×** (target ≤ 1.5×: {verdict})."]
    gc_path = os.path.join(out, "gc.json")
    if os.path.exists(gc_path):
        g = load(gc_path)
        lines += ["", f"Garbage collection over a registry of {g['registry']['manifests']:,} manifests "
                  "(DynamoDB requests / estimated read units):", "",
                  "| sweep | requests | read units | blobs deleted |", "|---|---:|---:|---:|",
                  f"| nothing deleted | {g['idle']['dynamodb_requests']} | "
                  f"{g['idle']['dynamodb_read_units_estimated']} | 0 |",
                  f"| after 10 image deletes | {g['sweep']['dynamodb_requests']} | "
                  f"{g['sweep']['dynamodb_read_units_estimated']} | {g['sweep']['blobs_deleted']} |",
                  f"| (one full table scan, for scale) | {g['scan']['dynamodb_requests']} | "
                  f"{g['scan']['dynamodb_read_units_estimated']} | |"]
    proxy_path = os.path.join(out, "proxy-bench.json")
    if os.path.exists(proxy_path):
        proxy = load(proxy_path)
        verdict = "met" if proxy["met"] else "MISSED"
        lines += ["", f"`berth proxy`: a {proxy['image']['bytes'] / 1e6:.0f} MB image pushed with "
                  f"skopeo through the proxy to a Berth refusing bodies over "
                  f"{proxy['body_limit']} bytes took {proxy['median_seconds']['proxy']:.2f} s, "
                  f"directly to Berth without the limit {proxy['median_seconds']['direct']:.2f} s: "
                  f"**{proxy['ratio_direct_over_proxy']}×** the direct throughput (target ≥ 0.7×: "
                  f"{verdict}); proxy peak RSS {proxy['proxy_peak_rss_mib']} MiB (target < 200)."]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
