"""The one base of the errors a user can fix, and how commands and jobs report them.

A :class:`FraudstreamError` says in one sentence what is wrong and how to fix it. A
command or job prints that sentence alone and exits with code 2
(:func:`reports_errors`); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

#: The exit code of a command or job that stopped on a :class:`FraudstreamError`.
EXIT_USER_ERROR = 2


class FraudstreamError(Exception):
    """A command or job cannot do what was asked; the message says why in one sentence."""


class DataError(FraudstreamError, ValueError):
    """The data or a setting given cannot be used as it is (also a ``ValueError``)."""


def reports_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Make a ``main`` print a :class:`FraudstreamError` as ``prog: message`` and return 2.

    Parameters
    ----------
    prog : str
        The command or job's name, which starts the line.
    """

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except FraudstreamError as error:
                sys.stderr.write(f"{prog}: {error}\n")
                return EXIT_USER_ERROR

        return run

    return decorate
