"""`berth mirror add|list|remove`: the pull-through cache rules (chalicelib/storage/mirrors.py).

Like the other account commands it works straight against the table of the running `make run`
(or AWS). Upstream credentials are read from standard input (`USER:PASSWORD`), never from the
command line, and stored in the local state folder (`make run`) or SSM (AWS), not in the table.
"""
from __future__ import annotations

import argparse
import os
import sys

from berth_local.cli import CliError, command


def _mirrors():
    from berth_local.admin import connect
    target = connect()
    if target.startswith("local"):
        from berth_local.run import STATE_DIR
        os.environ.setdefault("BERTH_MIRROR_CREDENTIALS_DIR", str(STATE_DIR / "mirror-credentials"))
    from chalicelib.storage import mirrors
    return mirrors


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="mirror an upstream registry under a namespace")
    add.add_argument("namespace")
    add.add_argument("--upstream", required=True, help="e.g. https://registry-1.docker.io")
    add.add_argument("--upstream-prefix", default="", help="prepended upstream, e.g. library/")
    add.add_argument("--credentials-stdin", action="store_true",
                     help="read USER:PASSWORD for the upstream from standard input")
    visibility = add.add_mutually_exclusive_group()
    visibility.add_argument("--public", dest="public", action="store_true", default=False,
                            help="anyone may pull (anonymously)")
    visibility.add_argument("--private", dest="public", action="store_false",
                            help="only users with pull rights on the namespace (default)")
    add.add_argument("--tag-ttl", default="10m", help="how long a tag is served before asking "
                     "the upstream again (90s, 10m, 1h)")
    sub.add_parser("list", help="list the rules")
    sub.add_parser("remove", help="remove a rule (cached images stay until evicted)"
                   ).add_argument("namespace")


def _read_credentials() -> tuple:
    line = sys.stdin.readline().rstrip("\r\n")
    username, sep, password = line.partition(":")
    if not sep or not username or not password:
        raise CliError("give the upstream credentials on standard input as USER:PASSWORD")
    return username, password


@command("mirror", "pull-through caches of other registries (add, list, remove)", _arguments)
def mirror_command(args: argparse.Namespace) -> int:
    mirrors = _mirrors()        # first: it points chalicelib at the target's endpoint
    from chalicelib.errors import RegistryError
    from chalicelib.gc import parse_duration
    try:
        if args.action == "add":
            try:
                ttl = parse_duration(args.tag_ttl)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            credentials = _read_credentials() if args.credentials_stdin else None
            rule = mirrors.add_rule(args.namespace, args.upstream, prefix=args.upstream_prefix,
                                    public=args.public, tag_ttl=ttl, credentials=credentials)
            print(f"{rule.namespace}/ mirrors {rule.upstream}/{rule.prefix}"
                  f" ({'public' if rule.public else 'private'}, tag TTL {int(rule.tag_ttl)}s"
                  f"{', with credentials' if rule.has_credentials else ''})")
        elif args.action == "list":
            for rule in mirrors.list_rules():
                print(f"{rule.namespace}\t{rule.upstream}\t{rule.prefix or '-'}\t"
                      f"{'public' if rule.public else 'private'}\tttl={int(rule.tag_ttl)}s\t"
                      f"{'credentials' if rule.has_credentials else 'anonymous'}")
        elif not mirrors.remove_rule(args.namespace):
            raise CliError(f"no mirror rule for {args.namespace}")
        else:
            print(f"removed the mirror rule of {args.namespace}")
    except RegistryError as error:
        raise CliError(error.message) from None
    return 0
