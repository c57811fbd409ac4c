"""The ``fraudstream spark`` subcommands: a local Spark standalone cluster.

Wired into ``fraudstream`` by :func:`add_commands`; the logic lives in
``fraudstream.ops.spark_cluster``::

    fraudstream spark start [--workers 2] [--worker-cores 1] [--worker-memory 2g]
    fraudstream spark status
    fraudstream spark stop

Jobs then run on it with ``./spark-submit.sh --master spark://127.0.0.1:7077 JOB``.
"""

from __future__ import annotations

import argparse

from fraudstream import config
from fraudstream.cli.services import add_actions, add_home, from_flags
from fraudstream.ops import spark_cluster as local_cluster

_cluster_from = from_flags(local_cluster.LocalCluster)


def _start(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    processes = local_cluster.start(cluster)
    for name, (pid, started) in processes.items():
        print(f"Spark {name} {'started' if started else 'already running'} (pid {pid}).")
    print(
        f"Cluster ready: {cluster.master_url} with {cluster.workers} workers of "
        f"{cluster.worker_cores} core(s) and {cluster.worker_memory} each; "
        f"UI http://{cluster.host}:{cluster.master_ui_port}/, logs in {cluster.home / 'logs'}."
    )
    return 0


def _stop(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    stopped = local_cluster.stop(cluster)
    if not stopped:
        print(f"No Spark process started from {cluster.home} is running.")
    for name, pid in stopped.items():
        print(f"Spark {name} stopped (pid {pid}).")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    pids = {name: local_cluster.running_pid(cluster, name) for name in cluster.names()}
    if all(pid is None for pid in pids.values()):
        print(f"No Spark process started from {cluster.home} is running.")
        return 1
    for name, pid in pids.items():
        print(f"Spark {name}: {f'running (pid {pid})' if pid else 'not running'}.")
    workers = local_cluster.registered_workers(cluster)
    cores = sum(worker.get("cores", 0) for worker in workers)
    print(f"{cluster.master_url}: {len(workers)} workers alive, {cores} cores.")
    return 0 if all(pids.values()) and len(workers) >= cluster.workers else 1


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``spark start|stop|status`` to the ``fraudstream`` command's subcommands."""
    defaults = local_cluster.LocalCluster()

    def options(action: argparse.ArgumentParser, _: str) -> None:
        add_home(
            action,
            str(config.VAR_DIR / "spark"),
            "the cluster's config, logs, scratch space and PIDs",
        )
        action.add_argument(
            "--master-port", type=int, default=defaults.master_port, help="default: %(default)s"
        )
        action.add_argument(
            "--master-ui-port",
            type=int,
            default=defaults.master_ui_port,
            help="the master's web UI and JSON status (default: %(default)s)",
        )
        action.add_argument(
            "--worker-ui-port",
            type=int,
            default=defaults.worker_ui_port,
            help="first worker's web UI; the next workers take the next ports "
            "(default: %(default)s)",
        )
        action.add_argument(
            "--workers", type=int, default=defaults.workers, help="default: %(default)s"
        )
        action.add_argument(
            "--worker-cores",
            type=int,
            default=defaults.worker_cores,
            help="cores each worker offers (default: %(default)s)",
        )
        action.add_argument(
            "--worker-memory",
            default=defaults.worker_memory,
            help="memory each worker offers (default: %(default)s)",
        )

    add_actions(
        commands,
        "spark",
        "start, stop or inspect a local Spark standalone cluster",
        [
            ("start", _start, "start a master and workers on 127.0.0.1; wait until registered"),
            ("stop", _stop, "stop the master and workers that start started"),
            ("status", _status, "say which of them run, and how many workers the master sees"),
        ],
        options,
    )
