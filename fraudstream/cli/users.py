"""The ``fraudstream users`` subcommands: who may log in to the ops dashboard, as what.

Wired into ``fraudstream`` by :func:`add_commands`; the users file and the roles are
:mod:`fraudstream.ui.auth`::

    fraudstream users add ana --role analyst     # asks for the password twice
    echo "$PASSWORD" | fraudstream users add ana --role analyst   # or reads one line
    fraudstream users add sam --role admin --no-password   # only through --auth proxy
    fraudstream users list | remove ana

A running dashboard reads the file again when it changes: a new user can log in at
once, and a changed role or a removed user counts from their next request.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from fraudstream.ui import auth


def _password() -> str:
    if not sys.stdin.isatty():
        # A script or a secret store pipes it in: one line, never an argument that
        # the process list would show.
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise auth.AuthError("The two passwords differ; nothing was changed.")
    return first


def _add(args: argparse.Namespace) -> int:
    store = auth.UserStore(Path(args.file))
    password = None if args.no_password else _password()
    new = store.add(args.name, args.role, password)
    how = "through the proxy only" if password is None else "with a password"
    print(f"{'Added' if new else 'Replaced'} {args.name} ({args.role}, {how}) in {store.path}.")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = auth.UserStore(Path(args.file)).users()
    if not users:
        print(f"No users in {args.file}.")
    for user in sorted(users.values(), key=lambda u: u.name):
        how = "password" if user.password_hash else "proxy only"
        print(f"{user.name}  {user.role}  ({how})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    store = auth.UserStore(Path(args.file))
    store.remove(args.name)
    print(f"Removed {args.name} from {store.path}.")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``users`` and its actions to the ``fraudstream`` command's subcommands."""
    group = commands.add_parser(
        "users",
        help="who may log in to the ops dashboard, as viewer, analyst or admin",
        description="The dashboard's users file: each user's role and a scrypt hash of the "
        "password. Viewers see; analysts also give verdicts; admins also change rules.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    where = {
        "default": str(auth.DEFAULT_USERS_FILE),
        "help": "the users file (default: %(default)s)",
    }
    add = actions.add_parser(
        "add",
        help="add a user, or replace one of that name",
        description="Add a user, or replace one of that name. The password is asked for "
        "twice on a terminal, or read as one line from standard input.",
    )
    add.set_defaults(handler=_add)
    add.add_argument("name", help="the user's name (letters, digits, ._@-)")
    add.add_argument("--role", required=True, choices=auth.ROLES, help="what the user may do")
    add.add_argument(
        "--no-password",
        action="store_true",
        help="no password: the user signs in through the trusted proxy (--auth proxy) only",
    )
    add.add_argument("--file", **where)
    listed = actions.add_parser("list", help="the users and their roles")
    listed.set_defaults(handler=_list)
    listed.add_argument("--file", **where)
    remove = actions.add_parser("remove", help="remove a user")
    remove.set_defaults(handler=_remove)
    remove.add_argument("name", help="the user's name")
    remove.add_argument("--file", **where)
