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


def commit_lines(out: str) -> list:
    """The commit benchmark's section (bench/commit_bench.py), if it ran."""
    lines: list = []
    commit_path = os.path.join(out, "commit.json")
    if os.path.exists(commit_path):
        c = load(commit_path)
        sizes = sorted(c["sizes"], key=int)
        lines += ["", f"Upload commit (the final PUT) of a blob sent in {c['chunk_mib']} MiB chunks over "
                  f"{c['instances']} Lambda instances (`bench/commit_bench.py`). moto's "
                  "CompleteMultipartUpload concatenates the parts, which S3 does not, so Berth's own "
                  "share (the commit minus that call) is shown apart:", "",
                  "| blob | commit s | of which moto's multipart completion s | Berth's share s | "
                  "blob read back or copied | slowest request s |", "|---:|---:|---:|---:|---|---:|"]
        for size in sizes:
            r = c["sizes"][size]
            label = f"{int(size) // 1024} GiB" if int(size) >= 1024 else f"{size} MiB"
            lines.append(f"| {label} | {r['commit_s_median']} | {sum(r['complete_multipart_s']) / len(r['complete_multipart_s']):.2f} "
                         f"| {r['berth_share_s_median']} | {', '.join(r['blob_read_or_copied']) or 'nothing'} "
                         f"| {r['slowest_request_s']} |")
        share = c["berth_share_ratio_largest_to_smallest"]
        lines += ["", f"Berth's share of the largest commit is **{share}×** the smallest's (target ≤ 2×: "
                  f"{'met' if share <= 2 else 'MISSED'}); end to end on moto it is "
                  f"{c['ratio_largest_to_smallest']}×, all of it moto's part concatenation. Worker peak "
                  f"RSS {', '.join(str(m) for m in c['worker_peak_rss_mib'])} MiB (target < 200). "
                  "(The 4 MiB blob is all in the tail object, which is copied to its content "
                  "address: bounded, at most 5 MiB.)"]
    return lines


def main() -> None:
    if sys.argv[1] == "--proxy-only":      # a partial run: the proxy benchmarks' sections alone
        print("\n".join(proxy_lines(sys.argv[2])))
        return
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
    lines += proxy_lines(out)
    lines += commit_lines(out)
    print("\n".join(lines))


def proxy_lines(out: str) -> list:
    """The `berth proxy` sections (bench/upload_profile.py, proxy_bench.py, proxy_big_bench.py)."""
    lines: list = []
    profile_path = os.path.join(out, "upload-profile.json")
    if os.path.exists(profile_path):
        p = load(profile_path)
        kinds = [k for k in ("direct", "pieces", "proxy") if k in p]
        names = sorted({n for k in kinds for n in p[k]["steps"]},
                       key=lambda n: -max(p[k]["steps"].get(n, {}).get("s", 0) for k in kinds))
        lines += ["", f"Where an upload's time goes (`bench/upload_profile.py`, one {p['blob_mib']} MiB "
                  "blob, Berth, proxy and client in one process, moto in its own; seconds summed over "
                  "the push, AWS calls are round trips to moto, so moto's work is in them): direct = "
                  "one PATCH to local mode (8 MiB pieces), pieces = 4 MiB PATCHes to a 6 MiB-limited "
                  "Berth, proxy = one PATCH to `berth proxy` in front of it.", "",
                  "| step | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds),
                  "| **wall** | " + " | ".join(f"**{p[k]['wall_s']}**" for k in kinds) + " |"]
        for name in names:
            cells = [p[k]["steps"].get(name) for k in kinds]
            lines.append(f"| {name} | " + " | ".join(f"{c['s']} ({c['calls']})" if c else "" for c in cells) + " |")
    proxy_path = os.path.join(out, "proxy-bench.json")
    if os.path.exists(proxy_path):
        proxy = load(proxy_path)
        verdict = "met" if proxy["met"] else "MISSED"
        upstream = proxy.get("upstream", {"instances": 1, "gateway": "local"})
        lines += ["", f"`berth proxy` (`bench/proxy_bench.py`): an image of {proxy['image']['bytes'] / 1e6:.0f} MB "
                  f"(layers {proxy['image']['layers_mib']} MiB) pushed with skopeo through the proxy to a "
                  f"Berth refusing bodies over {proxy['body_limit']} bytes "
                  f"(BERTH_INSTANCES={upstream['instances']}, BERTH_GATEWAY={upstream['gateway']}) took "
                  f"{proxy['median_seconds']['proxy']:.2f} s, directly to Berth in local mode without the "
                  f"limit {proxy['median_seconds']['direct']:.2f} s (medians of {proxy['reps']}): "
                  f"**{proxy['ratio_direct_over_proxy']}×** the direct throughput (target ≥ "
                  f"{proxy['target']}×: {verdict}); peak RSS: proxy {proxy['proxy_peak_rss_mib']} MiB"
                  + "".join(f", {kind} Berth {r['gateway']} MiB"
                            + (f" (instances {', '.join(map(str, r['instances']))} MiB)" if r["instances"] else "")
                            for kind, r in proxy.get("registry_peak_rss_mib", {}).items())
                  + " (target < 200)."]
    big_path = os.path.join(out, "proxy-big.json")
    if os.path.exists(big_path):
        big = load(big_path)
        rss = big["peak_rss_mib"]
        lines += ["", f"A {big['layer_mib'] // 1024} GiB layer with skopeo through `berth proxy` to "
                  "`BERTH_GATEWAY=aws BERTH_INSTANCES=3` Berth (`bench/proxy_big_bench.py`): push "
                  f"{big['push_s']} s ({big['push_mb_per_s']} MB/s), pull back {big['pull_s']} s, digest "
                  f"{'equal' if big['digest_equal'] else 'DIFFERENT'}; {big['requests_logged']} requests "
                  f"logged with their duration, the slowest {big['slowest_request_ms'] / 1000:.1f} s "
                  f"({big['slowest_request']}; the blob's commit {(big['blob_commit_ms'] or 0) / 1000:.1f} s), "
                  f"{big['gateway_504s']} answered 504 (limit 29 s: "
                  f"{'met' if big['none_over_29s'] else 'MISSED'}). Peak RSS: gateway {rss['gateway']} MiB, "
                  f"instances {', '.join(map(str, rss['instances']))} MiB, proxy {rss['proxy']} MiB "
                  f"(target < 200: {'met' if big['rss_under_200'] else 'MISSED'})."]
    return lines


if __name__ == "__main__":
    main()
