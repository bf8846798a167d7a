"""`berth gc` and `berth stats`: garbage collection on demand, and what the registry stores.

Target: the registry `make run` is serving, or AWS with BERTH_TARGET=aws (see
berth_local/admin.connect). The sweep runs here, straight against DynamoDB and S3, exactly as the
scheduled Lambda runs it (chalicelib/gc.py explains what it deletes and why that is safe alongside live pushes).
"""
from __future__ import annotations

import argparse
import json
import sys

from berth_local.cli import CliError, command


def _gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would be deleted, delete nothing")
    parser.add_argument("--grace", metavar="DURATION",
                        help="keep unreferenced blobs uploaded or mounted more recently than "
                             "this (0, 90s, 30m, 1h, 2d; default BERTH_GC_GRACE or 1h)")
    parser.add_argument("--untagged-max-age", metavar="DURATION",
                        default=None, help="delete untagged manifests last pushed longer ago "
                        "than this, or `never` (default BERTH_GC_UNTAGGED_MAX_AGE or never)")
    parser.add_argument("--upload-max-age", metavar="DURATION",
                        help="abort upload sessions idle for longer than this "
                             "(default BERTH_GC_UPLOAD_MAX_AGE or 24h)")
    parser.add_argument("--budget", metavar="DURATION",
                        help="stop after this long; the next run continues")
    parser.add_argument("--check", action="store_true",
                        help="instead of sweeping, check the invariants GC relies on (a full "
                             "scan of the table and bucket); exit status 1 if any is broken")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


_ALWAYS_OK = ("unreferenced_blobs", "blobs_being_deleted", "manifest_blobs_not_linked")


@command("gc", "garbage collection: delete blobs no image uses, abandoned uploads, and "
         "(by policy) old untagged manifests", _gc_arguments)
def gc_command(args: argparse.Namespace) -> int:
    from berth_local.admin import connect
    target = connect()
    from chalicelib import gc
    if args.check:
        problems = gc.audit()
        broken = {k: v for k, v in problems.items() if v and k not in _ALWAYS_OK}
        if args.json:
            print(json.dumps({"target": target, "problems": problems}, indent=2))
        else:
            for name, items in problems.items():
                print(f"{name}: {len(items)}")
                for item in items[:20]:
                    print(f"  {item}")
        return 1 if broken else 0
    try:     # parsed only now: chalicelib must not be imported before connect()
        durations = {name: None if getattr(args, name) is None
                     else gc.parse_duration(getattr(args, name), name == "untagged_max_age")
                     for name in ("grace", "untagged_max_age", "upload_max_age", "budget")}
    except ValueError as error:
        raise CliError(str(error)) from None
    options = {}
    if args.untagged_max_age is not None:
        options["untagged_max_age"] = durations["untagged_max_age"]
    try:
        report = gc.sweep(grace=durations["grace"], upload_max_age=durations["upload_max_age"],
                          dry_run=args.dry_run, budget_seconds=durations["budget"], **options)
    except ValueError as error:        # a bad BERTH_GC_* value in the environment
        raise CliError(str(error)) from None
    result = report.to_dict()
    if args.json:
        print(json.dumps(dict(result, target=target), indent=2))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{target}: {verb} {report.blobs_deleted} blobs ({_size(report.bytes_deleted)}), "
          f"{report.manifests_deleted} manifests, {report.sessions_deleted} upload sessions"
          + (f", {report.orphans_deleted} orphaned objects" if report.orphans_deleted else ""))
    print(f"  {report.events_read} GC events read, {report.blobs_in_use} blobs in use, "
          f"{report.blobs_busy} left for the next run; {report.dynamodb_requests} DynamoDB "
          f"requests ({report.dynamodb_read_units:g} RCU, {report.dynamodb_write_units:g} WCU "
          f"reported), {report.s3_requests} S3 requests, {report.seconds:.1f} s"
          + ("" if report.complete else "; time budget exhausted: run again"), file=sys.stdout)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


@command("stats", "stored blobs (count and bytes), pending GC events, upload sessions",
         _stats_arguments)
def stats_command(args: argparse.Namespace) -> int:
    from berth_local.admin import connect
    target = connect()
    from chalicelib import gc
    result = gc.stats()
    if args.json:
        print(json.dumps(dict(result, target=target), indent=2))
    else:
        print(f"{target}: {result['blobs']} blobs, {_size(result['bytes'])}; "
              f"{result['gc_events_pending']} GC events pending; "
              f"{result['upload_sessions']} upload sessions")
    return 0
