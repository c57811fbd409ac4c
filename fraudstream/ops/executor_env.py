"""The Python environment shipped to a cluster's executors as a packed archive.

Spark's Python packaging guide ships native dependencies (numpy, pandas, pyarrow,
scikit-learn) to executors as a packed virtual environment passed with ``--archives``,
and points executors at its interpreter with ``spark.pyspark.python``. The project's
``.venv`` cannot be packed as it is: ``venv-pack`` refuses environments with editable
installs (``fraudstream`` is installed editable), and the development tools in it
(Jupyter, Playwright, ruff) have no business on executors. So a separate environment
is built from the project's runtime dependencies (``pyproject.toml``, pinned by
``requirements.lock``), without ``fraudstream`` itself (``--py-files`` ships it), and
packed with ``venv-pack``. It is rebuilt only when a stamp (a hash of what went into it)
changes.

Run ``python -m fraudstream.ops.executor_env`` to build it if needed and print its path.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

from fraudstream import config
from fraudstream.errors import FraudstreamError

_LOG = logging.getLogger(__name__)

BUILD_DIR = config.PROJECT_ROOT / "build"
ENV_DIR = BUILD_DIR / "executor-env"
ARCHIVE = BUILD_DIR / "executor-env.tar.gz"
STAMP = BUILD_DIR / "executor-env.stamp"

#: Where executors find the unpacked archive: ``--archives ARCHIVE#environment``.
ARCHIVE_ALIAS = "environment"
EXECUTOR_PYTHON = f"./{ARCHIVE_ALIAS}/bin/python"

_SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
#: Left out of the archive: pyspark's jars (about 400 MB; executors are JVMs that bring
#: their own) and its examples. Executors need pyspark's Python modules only.
EXCLUDES = (f"{_SITE}/pyspark/jars/*", f"{_SITE}/pyspark/examples/*")

#: gzip level: 1 packs about 1.2 GB into about 300 MB in under half a minute; higher
#: levels save little and take minutes on two cores.
COMPRESS_LEVEL = 1


class EnvironmentArchiveError(FraudstreamError):
    """The archive could not be built; the message is one sentence."""


def runtime_requirements(pyproject: Path = config.PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """Return the project's runtime dependencies (``[project] dependencies``)."""
    with pyproject.open("rb") as file:
        return list(tomllib.load(file)["project"]["dependencies"])


def fingerprint(root: Path = config.PROJECT_ROOT) -> str:
    """Return a hash of everything the archive is built from.

    The runtime dependencies, the lock file, the interpreter's version and path (the
    packed environment links to it), and the packing options.
    """
    digest = hashlib.sha256()
    for part in (
        *runtime_requirements(root / "pyproject.toml"),
        (root / "requirements.lock").read_text(),
        sys.version,
        _base_python(),
        *EXCLUDES,
        str(COMPRESS_LEVEL),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _base_python() -> str:
    # The interpreter the venvs were made from (not .venv/bin/python, a link into .venv).
    return getattr(sys, "_base_executable", sys.executable)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentArchiveError(f"{what} failed: {last[0]}")


def ensure_archive(log=_LOG.info) -> Path:
    """Build and pack the executors' environment unless the archive is up to date.

    Parameters
    ----------
    log : callable
        Receives a line when the archive is (re)built, which takes a minute or two.

    Returns
    -------
    Path
        The packed environment (``build/executor-env.tar.gz``).

    Raises
    ------
    EnvironmentArchiveError
        If the environment cannot be built or packed.
    """
    wanted = fingerprint()
    if ARCHIVE.is_file() and STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return ARCHIVE
    log(f"Building the executors' Python environment in {ENV_DIR} (a minute or two) ...")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    _run([_base_python(), "-m", "venv", "--clear", str(ENV_DIR)], "Creating a virtual environment")
    lock = str(config.PROJECT_ROOT / "requirements.lock")
    pip = [str(ENV_DIR / "bin" / "python"), "-m", "pip", "install", "-q", "-c", lock]
    _run([*pip, *runtime_requirements()], "Installing the runtime dependencies")
    venv_pack = Path(sys.executable).parent / "venv-pack"
    if not venv_pack.exists():
        raise EnvironmentArchiveError(
            "venv-pack is missing from the project's environment: run scripts/setup.sh."
        )
    partial = ARCHIVE.with_name(ARCHIVE.name + ".partial")
    excludes = [option for pattern in EXCLUDES for option in ("--exclude", pattern)]
    pack = [
        str(venv_pack), "-p", str(ENV_DIR), "-o", str(partial), "--format", "tar.gz",
        "--compress-level", str(COMPRESS_LEVEL), "--force", "--quiet", *excludes,
    ]  # fmt: skip
    _run(pack, "Packing the executors' environment with venv-pack")
    partial.replace(ARCHIVE)
    STAMP.write_text(wanted + "\n")
    log(f"Packed {ARCHIVE} ({ARCHIVE.stat().st_size / 1e6:,.0f} MB).")
    return ARCHIVE


def main() -> int:
    """Build the archive if needed and print its path; progress and errors go to stderr.

    ``spark-submit.sh`` runs this module and reads the archive's path from its stdout, so
    this command-line entry point prints rather than logs.

    Returns
    -------
    int
        The exit status: 0, or 2 if the archive could not be built.
    """
    try:
        archive = ensure_archive(log=lambda line: print(line, file=sys.stderr, flush=True))  # noqa: T201
    except EnvironmentArchiveError as error:
        print(f"executor_env: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(archive)  # noqa: T201 - spark-submit.sh reads the archive's path from stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
