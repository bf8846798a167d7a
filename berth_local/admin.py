"""`berth user|namespace|repo|token …`: account administration, straight against DynamoDB.

Target: the registry `make run` is serving (found through .berth/local.json); AWS (the usual AWS
environment: credentials, AWS_REGION, BERTH_TABLE) only with BERTH_TARGET=aws, never by default.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time

from berth_local.cli import CliError, command


def connect() -> str:
    """Point chalicelib at the right backend; returns a description of the target.

    Never falls back to AWS by itself: without BERTH_TARGET=aws it needs a live `make run`
    (its .berth/local.json, whose process is running), and says what to do otherwise."""
    from berth_local.run import STATE_FILE
    target = os.environ.get("BERTH_TARGET", "auto")
    if target not in ("auto", "local", "aws"):
        raise CliError(f"BERTH_TARGET must be auto, local or aws, not {target!r}")
    if target == "aws":
        return "AWS (table {})".format(os.environ.get("BERTH_TABLE", "berth"))
    if os.environ.get("BERTH_AWS_ENDPOINT"):       # an explicit endpoint (moto) wins
        return f"the AWS endpoint {os.environ['BERTH_AWS_ENDPOINT']}"
    state = _local_state(STATE_FILE)
    if state is None:
        raise CliError(_no_local_registry(STATE_FILE))
    from berth_local.backend import use_endpoint
    use_endpoint(state["aws_endpoint"])
    return f"local registry {state['registry']}"


def _local_state(path) -> "dict | None":
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
        return state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _no_local_registry(path) -> str:
    found = "no " + str(path) if not path.exists() else (
        f"{path} belongs to a `make run` that is no longer running")
    return (f"no running `make run` registry found ({found}): start one with `make run`, "
            "or set BERTH_TARGET=aws to administer the AWS deployment")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise CliError("the passwords differ")
    else:
        raise CliError("give the password on standard input with --password-stdin")
    if not password:
        raise CliError("empty password")
    return password


def _accounts():
    connect()
    from chalicelib.auth import accounts
    return accounts


def _run(action):
    """Run an account operation, turning refusals into one-line CLI errors."""
    accounts = _accounts()
    try:
        return action(accounts)
    except accounts.AccountError as error:
        raise CliError(str(error)) from None


# ---------------------------------------------------------------- berth user

def _user_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--admin", action="store_true", help="may do anything in any namespace")
    passwd = sub.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    for name, text in (("disable", "refuse every login of a user"), ("enable", "allow it again")):
        sub.add_parser(name, help=text).add_argument("name")


@command("user", "manage users (add, passwd, disable, enable)", _user_arguments)
def user_command(args: argparse.Namespace) -> int:
    if args.action == "add":
        password = _read_password(args)
        _run(lambda a: a.create_user(args.name, password, admin=args.admin))
        print(f"created user {args.name}" + (" (admin)" if args.admin else ""))
    elif args.action == "passwd":
        password = _read_password(args)
        _run(lambda a: a.set_password(args.name, password))
        print(f"password of {args.name} changed")
    else:
        _run(lambda a: a.set_user_flags(args.name, disabled=args.action == "disable"))
        print(f"user {args.name} {args.action}d")
    return 0


# ---------------------------------------------------------------- berth namespace

def _namespace_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a namespace (activation)")
    add.add_argument("name")
    add.add_argument("--owner", required=True)
    add.add_argument("--public", action="store_true", help="anyone may pull its images")
    member = sub.add_parser("member", help="give a user a role in a namespace")
    member.add_argument("name")
    member.add_argument("user")
    member.add_argument("--role", choices=["owner", "push", "pull"], required=True)
    for name in ("public", "private"):
        sub.add_parser(name, help=f"make every image of a namespace {name}").add_argument("name")


@command("namespace", "manage namespaces (add, member, public, private)", _namespace_arguments)
def namespace_command(args: argparse.Namespace) -> int:
    if args.action == "add":
        _run(lambda a: a.create_namespace(args.name, args.owner, public=args.public))
        print(f"created namespace {args.name} owned by {args.owner}")
    elif args.action == "member":
        _run(lambda a: a.add_member(args.name, args.user, args.role))
        print(f"{args.user} is {args.role} of {args.name}")
    else:
        _run(lambda a: a.set_namespace_public(args.name, args.action == "public"))
        print(f"namespace {args.name} is {args.action}")
    return 0


# ---------------------------------------------------------------- berth repo

def _repo_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name in ("public", "private"):
        sub.add_parser(name, help=f"make one repository {name}").add_argument("name")


@command("repo", "repository visibility (public, private)", _repo_arguments)
def repo_command(args: argparse.Namespace) -> int:
    accounts = _accounts()
    from chalicelib.errors import RegistryError
    try:
        accounts.set_repository_public(args.name, args.action == "public")
    except RegistryError as error:
        raise CliError(error.message) from None
    print(f"repository {args.name} is {args.action}")
    return 0


# ---------------------------------------------------------------- berth token

def _token_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create an access token, usable as a password")
    create.add_argument("user")
    create.add_argument("name")
    create.add_argument("--scope", choices=["pull", "push"], required=True)
    revoke = sub.add_parser("revoke", help="revoke a user's token")
    revoke.add_argument("user")
    revoke.add_argument("name")
    sub.add_parser("list", help="list a user's tokens").add_argument("user")


@command("token", "access tokens for CI (create, revoke, list)", _token_arguments)
def token_command(args: argparse.Namespace) -> int:
    if args.action == "create":
        secret = _run(lambda a: a.create_access_token(args.user, args.name, args.scope))
        print(secret)
        print(f"(token {args.name!r} of {args.user}, scope {args.scope}: use it as the password "
              "of `docker login`; it is not shown again)", file=sys.stderr)
    elif args.action == "revoke":
        _run(lambda a: a.revoke_access_token(args.user, args.name))
        print(f"revoked token {args.name} of {args.user}")
    else:
        for token in _run(lambda a: a.list_access_tokens(args.user)):
            used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(token.last_used)) \
                if token.last_used else "never"
            state = "revoked" if token.revoked else "active"
            print(f"{token.name}\t{token.scope}\t{state}\tlast used {used}")
    return 0
