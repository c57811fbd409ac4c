"""One logging convention for jobs, commands and services.

The library reports progress through :mod:`logging`, each module under its own name
(``fraudstream.scoring.processor``). A function whose progress a caller may want line
by line (a query's micro-batches, a training run's stages) also takes ``log``, a
callable of one line that defaults to its module's logger; tests pass a list's
``append`` to read the lines. A job or command calls :func:`configure` once, so that
every record is one line in one format on standard error; standard output is left to
the job's result (a summary, a report).
"""

from __future__ import annotations

import logging
import sys

#: Time, level, the module that logged, and the message.
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Libraries whose INFO records are noise to an operator: their warnings still show.
QUIET = ("py4j", "kafka", "urllib3", "alembic")


class _StandardError(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is at each record.

    Test runners (and notebooks) replace ``sys.stderr``; a handler that kept the stream
    it was made with would write to one that is gone.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        """The current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Log ``level`` and above of every logger to standard error, one line each.

    Idempotent, and it leaves other handlers alone (a test runner's, for one).
    """
    root = logging.getLogger()
    if not any(getattr(handler, "fraudstream", False) for handler in root.handlers):
        handler = _StandardError()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.fraudstream = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
