"""A local Spark standalone cluster (a master and workers on 127.0.0.1) from the pip pyspark.

``fraudstream spark start`` starts the master and the workers in the background with
``spark-class`` (pyspark's pip package ships ``bin/spark-class`` but not the ``sbin``
start scripts), waits until every worker has registered with the master, and records
each process's PID. ``stop`` stops only the processes that ``start`` recorded.
Everything lives under one folder (``var/spark`` by default): ``spark-defaults.conf``,
``logs/``, the workers' scratch folders ``work-N/`` and the PID files.

The daemons run with a ``PATH`` that leaves out the project's ``.venv``: executors must
use the Python environment the application ships (``./spark-submit.sh`` sends a packed
one with ``--archives``), as they would on machines that never saw this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fraudstream import config
from fraudstream.errors import FraudstreamError
from fraudstream.ops.process import (
    abandon,
    launch,
    port_in_use,
    recorded_pid,
    require_free_ports,
    terminate,
    wait_until_ready,
)

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"

#: Heap of the master and worker daemons themselves (executors get their own).
DAEMON_MEMORY = "512m"

#: A finished application's folder in a worker's scratch space holds the Python
#: environment it shipped, unpacked (about 0.9 GB per executor): the workers remove
#: it five minutes after the application ends, and ``stop`` removes what is left but
#: the executors' logs.
APP_DATA_TTL_S = 300
CLEANUP_INTERVAL_S = 60
EXECUTOR_LOGS = ("stdout", "stderr")


class ClusterError(FraudstreamError):
    """A cluster command could not do what was asked; the message is one sentence."""


@dataclass(frozen=True)
class LocalCluster:
    """Where a local standalone cluster lives and listens.

    Parameters
    ----------
    home : Path
        Folder for the configuration, logs, scratch space and PID files.
    master_port : int
        The master's port: applications use ``spark://127.0.0.1:MASTER_PORT``.
    master_ui_port : int
        The master's web UI, which also serves the cluster's state as JSON at ``/json/``.
    worker_ui_port : int
        The first worker's web UI; worker N uses ``worker_ui_port + N - 1``.
    workers : int
        How many workers to run.
    worker_cores : int
        Cores each worker offers to applications.
    worker_memory : str
        Memory each worker offers to applications, such as ``2g``.
    """

    home: Path = config.VAR_DIR / "spark"
    master_port: int = 7077
    master_ui_port: int = 8080
    worker_ui_port: int = 8081
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"
    host: str = "127.0.0.1"

    @property
    def master_url(self) -> str:
        """What applications give as ``--master``: ``spark://host:port``."""
        return f"spark://{self.host}:{self.master_port}"

    @property
    def status_url(self) -> str:
        """The master's state as JSON (workers, applications)."""
        return f"http://{self.host}:{self.master_ui_port}/json/"

    @property
    def properties_file(self) -> Path:
        """The ``spark-defaults.conf`` the master and workers are started with."""
        return self.home / "spark-defaults.conf"

    def names(self) -> list[str]:
        """The cluster's processes, master first: ``master``, ``worker-1``, ..."""
        return ["master", *(f"worker-{n}" for n in range(1, self.workers + 1))]

    def pid_file(self, name: str) -> Path:
        """Where ``start`` records the PID of process ``name`` (see :meth:`names`)."""
        return self.home / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """The log of process ``name`` (see :meth:`names`)."""
        return self.home / "logs" / f"{name}.log"

    def ports(self) -> list[int]:
        """The fixed ports the cluster listens on (workers' RPC ports are random)."""
        return [
            self.master_port,
            self.master_ui_port,
            *(self.worker_ui_port + n for n in range(self.workers)),
        ]


def spark_home() -> Path:
    """Return the pyspark installation, which holds ``bin/spark-class`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _command(cluster: LocalCluster, name: str) -> list[str]:
    spark_class = str(spark_home() / "bin" / "spark-class")
    common = ["--host", cluster.host, "--properties-file", str(cluster.properties_file)]
    if name == "master":
        return [
            spark_class,
            MASTER_CLASS,
            *common,
            "--port",
            str(cluster.master_port),
            "--webui-port",
            str(cluster.master_ui_port),
        ]
    number = int(name.split("-")[1])
    return [
        spark_class,
        WORKER_CLASS,
        *common,
        "--webui-port",
        str(cluster.worker_ui_port + number - 1),
        "--cores",
        str(cluster.worker_cores),
        "--memory",
        cluster.worker_memory,
        "--work-dir",
        str(cluster.home / f"work-{number}"),
        cluster.master_url,
    ]


def _environment(cluster: LocalCluster) -> dict[str, str]:
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", config.PROJECT_ROOT / ".venv")) / "bin")
    path = os.pathsep.join(
        part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin
    )
    env = {
        key: value
        for key, value in os.environ.items()
        # A driver's Python settings must not leak into the executors' environment.
        if not key.startswith(("PYSPARK_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    return env | {
        "PATH": path,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": cluster.host,
        "SPARK_CONF_DIR": str(config.PROJECT_ROOT / "conf" / "spark"),
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "SPARK_LOG_DIR": str(cluster.home / "logs"),
    }


def _write_config(cluster: LocalCluster) -> None:
    (cluster.home / "logs").mkdir(parents=True, exist_ok=True)
    cluster.properties_file.write_text(
        "\n".join(
            [
                "spark.worker.cleanup.enabled true",
                f"spark.worker.cleanup.interval {CLEANUP_INTERVAL_S}",
                f"spark.worker.cleanup.appDataTtl {APP_DATA_TTL_S}",
                # A taken port is an error, not a reason to listen on the next one: a
                # master that wandered off would leave its workers joining another master.
                "spark.port.maxRetries 0",
                "",
            ]
        )
    )


def running_pid(cluster: LocalCluster, name: str) -> int | None:
    """Return the PID of process ``name`` that ``start`` recorded, if it still runs."""
    main_class = MASTER_CLASS if name == "master" else WORKER_CLASS
    return recorded_pid(cluster.pid_file(name), main_class, str(cluster.properties_file))


def registered_workers(cluster: LocalCluster) -> list[dict]:
    """Return this cluster's workers that its master lists as ALIVE, or [] if it is down.

    Workers are told apart by their web UI address (``worker_ui_port`` onwards), so a
    worker of another cluster that joined this master is not counted.
    """
    try:
        with urllib.request.urlopen(cluster.status_url, timeout=2) as response:
            status = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return []
    ours = {f"http://{cluster.host}:{port}" for port in cluster.ports()[2:]}
    return [
        worker
        for worker in status.get("workers", [])
        if worker.get("state") == "ALIVE" and worker.get("webuiaddress") in ours
    ]


def _launch(cluster: LocalCluster, name: str) -> subprocess.Popen:
    # spark-class ends by exec-ing java, so this PID is the daemon's JVM.
    command = _command(cluster, name)
    return launch(command, cluster.log_file(name), cluster.pid_file(name), _environment(cluster))


def _wait_until_registered(cluster: LocalCluster, launched: dict[str, subprocess.Popen]) -> None:
    wait_until_ready(
        lambda: len(registered_workers(cluster)) >= cluster.workers,
        {f"The Spark {name}": (p, cluster.log_file(name)) for name, p in launched.items()},
        START_TIMEOUT_S,
        f"Not all {cluster.workers} Spark workers registered with {cluster.master_url}",
        ClusterError,
    )


def start(cluster: LocalCluster) -> dict[str, tuple[int, bool]]:
    """Start the master and the workers that are not running yet; wait until all registered.

    Returns
    -------
    dict
        Process name (``master``, ``worker-1``, ...) to its PID and whether this call
        started it.

    Raises
    ------
    ClusterError
        If a port is taken by another program, or the cluster does not come up.
    """
    if cluster.workers < 1 or cluster.worker_cores < 1:
        raise ClusterError("A cluster needs at least one worker with at least one core.")
    running = {
        name: pid for name in cluster.names() if (pid := running_pid(cluster, name)) is not None
    }
    missing = [name for name in cluster.names() if name not in running]
    if not missing:
        return {name: (pid, False) for name, pid in running.items()}
    ports = {"master": cluster.ports()[:2]} | {
        name: [port] for name, port in zip(cluster.names()[1:], cluster.ports()[2:], strict=True)
    }
    for name in missing:
        require_free_ports(
            cluster.host,
            ports[name],
            "stop it or choose other ports with --master-port, --master-ui-port "
            "and --worker-ui-port.",
            ClusterError,
        )
    cluster.home.mkdir(parents=True, exist_ok=True)
    _write_config(cluster)
    launched: dict[str, subprocess.Popen] = {}
    try:
        for name in missing:
            launched[name] = _launch(cluster, name)
            if name == "master":
                # Workers give up after a few retries if the master is not up yet.
                _wait_for_port(cluster, launched["master"])
        _wait_until_registered(cluster, launched)
    except ClusterError:
        for name, process in launched.items():
            abandon(process, cluster.pid_file(name))
        raise
    return {
        name: (launched[name].pid, True) if name in launched else (running[name], False)
        for name in cluster.names()
    }


def _wait_for_port(cluster: LocalCluster, master: subprocess.Popen) -> None:
    wait_until_ready(
        lambda: port_in_use(cluster.host, cluster.master_port),
        {"The Spark master": (master, cluster.log_file("master"))},
        START_TIMEOUT_S,
        f"The Spark master did not listen on {cluster.master_url}",
        ClusterError,
    )


def stop(cluster: LocalCluster) -> dict[str, int]:
    """Stop the processes that ``start`` recorded, workers first; return name to PID stopped.

    Then removes the applications' files from the workers' scratch folders (shipped
    environments and jars), keeping each executor's ``stdout`` and ``stderr``.
    """
    stopped = {}
    for name in reversed(cluster.names()):
        pid = running_pid(cluster, name)
        if pid is not None:
            terminate(pid, STOP_TIMEOUT_S)
            stopped[name] = pid
        cluster.pid_file(name).unlink(missing_ok=True)
    if not any(running_pid(cluster, name) for name in cluster.names()):
        for entry in cluster.home.glob("work-*/app-*/*/*"):
            if entry.name in EXECUTOR_LOGS:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return stopped
