"""``start``, ``stop`` and ``status`` of a local service, built the same way for each.

A service module of :mod:`fraudstream.ops` has ``start(x) -> (pid, started)``,
``stop(x) -> pid | None`` and ``running_pid(x) -> pid | None`` over a settings object
``x``; :class:`Service` says how to make ``x`` from the flags and what to say about it,
and :func:`add_service` adds the three actions with their shared flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def from_flags(settings: type) -> Callable[[argparse.Namespace], Any]:
    """Make a service's settings (a dataclass) from the flags named as its fields.

    A flag that was not given (``None``) leaves the field's default; ``home`` becomes a
    ``Path``.
    """
    names = [field.name for field in dataclasses.fields(settings) if field.init]

    def build(args: argparse.Namespace) -> Any:
        given: dict[str, Any] = {
            name: getattr(args, name) for name in names if getattr(args, name, None) is not None
        }
        if "home" in given:
            given["home"] = Path(given["home"])
        return settings(**given)

    return build


@dataclass(frozen=True)
class Service:
    """How the ``fraudstream`` command drives one local service.

    Parameters
    ----------
    title : str
        Its name in messages ("Kafka broker").
    settings : callable
        The service's settings from the parsed flags.
    start, stop, running_pid : callable
        The service module's functions.
    address : callable
        Where it serves, for messages ("127.0.0.1:9092").
    after_start : callable, optional
        More to do and say once it runs (create topics, a database); it gets the
        settings and the flags.
    details : callable, optional
        More to say in ``status`` once it runs.
    """

    title: str
    settings: Callable[[argparse.Namespace], Any]
    start: Callable[[Any], tuple[int, bool]]
    stop: Callable[[Any], int | None]
    running_pid: Callable[[Any], int | None]
    address: Callable[[Any], str]
    after_start: Callable[[Any, argparse.Namespace], None] | None = None
    details: Callable[[Any], None] | None = None

    def do_start(self, args: argparse.Namespace) -> int:
        """``start``: start the service unless it runs, and say where it serves."""
        settings = self.settings(args)
        pid, started = self.start(settings)
        verb = "started" if started else "already running"
        print(f"{self.title} {verb} on {self.address(settings)} (pid {pid}, home {settings.home}).")
        if self.after_start is not None:
            self.after_start(settings, args)
        return 0

    def do_stop(self, args: argparse.Namespace) -> int:
        """``stop``: stop the service started from the home folder, if it runs."""
        settings = self.settings(args)
        pid = self.stop(settings)
        if pid is None:
            print(f"No {self.title} started from {settings.home} is running.")
        else:
            print(f"{self.title} stopped (pid {pid}).")
        return 0

    def do_status(self, args: argparse.Namespace) -> int:
        """``status``: whether the service runs; exit status 1 if it does not."""
        settings = self.settings(args)
        pid = self.running_pid(settings)
        if pid is None:
            print(f"No {self.title} started from {settings.home} is running.")
            return 1
        print(f"{self.title} running on {self.address(settings)} (pid {pid}).")
        if self.details is not None:
            self.details(settings)
        return 0


def add_actions(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    actions: Sequence[tuple[str, Callable[[argparse.Namespace], int], str]],
    add_options: Callable[[argparse.ArgumentParser, str], None],
) -> None:
    """Add command ``name`` with its ``actions`` (name, handler, help) and their flags.

    ``add_options(parser, action)`` adds the flags of one action: most are shared
    (``--home``, ports), some belong to one action.
    """
    command = commands.add_parser(name, help=help_text)
    subcommands = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, handler, text in actions:
        parser = subcommands.add_parser(action, help=text, description=text)
        parser.set_defaults(handler=handler)
        add_options(parser, action)


def add_service(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    service: Service,
    texts: tuple[str, str, str],
    add_options: Callable[[argparse.ArgumentParser, str], None],
) -> None:
    """Add ``name start|stop|status`` for ``service``; ``texts`` are the three helps."""
    handlers = (service.do_start, service.do_stop, service.do_status)
    actions = list(zip(("start", "stop", "status"), handlers, texts, strict=True))
    add_actions(commands, name, help_text, actions, add_options)


def add_home(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    """The ``--home`` flag: the folder a service keeps ``what`` in."""
    parser.add_argument("--home", default=default, help=f"folder for {what} (default: %(default)s)")
