"""The ``fraudstream kafka`` command, run as a user runs it."""

from __future__ import annotations

import socket
import subprocess
import sys

from fraudstream.ops import process


def _fraudstream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_kafka_start_on_busy_port_fails_with_one_sentence(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        result = _fraudstream(
            "kafka",
            "start",
            "--home",
            str(tmp_path / "kafka"),
            "--port",
            str(busy_port),
            "--controller-port",
            str(busy_port + 1 if busy_port < 65535 else busy_port - 1),
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"fraudstream: Port {busy_port} on 127.0.0.1 is already in use by another program; "
        "stop it or choose other ports with --port/--controller-port."
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "kafka" / "broker.pid").exists()


def test_kafka_start_twice_is_harmless_and_stop_stops_only_its_own(tmp_path):
    home = tmp_path / "kafka"
    ports = _free_ports(2)
    args = ["--home", str(home), "--port", str(ports[0]), "--controller-port", str(ports[1])]
    first = _fraudstream("kafka", "start", *args, "--partitions", "2")
    assert first.returncode == 0, first.stderr
    try:
        assert f"Kafka broker started on 127.0.0.1:{ports[0]}" in first.stdout
        pid = int((home / "broker.pid").read_text())

        second = _fraudstream("kafka", "start", *args)
        assert second.returncode == 0, second.stderr
        assert f"already running on 127.0.0.1:{ports[0]} (pid {pid}" in second.stdout

        status = _fraudstream("kafka", "status", *args)
        assert status.returncode == 0
        assert "payments: 2 partitions, kept forever" in status.stdout
        assert "fraud-labels: 2 partitions, kept forever" in status.stdout
        assert "payments-dlq: 2 partitions, kept forever" in status.stdout
        assert "fraud-alerts: 2 partitions" in status.stdout
    finally:
        stopped = _fraudstream("kafka", "stop", *args)
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"Kafka broker stopped (pid {pid})."
    assert not process.port_in_use("127.0.0.1", ports[0])
    assert _fraudstream("kafka", "status", *args).returncode == 1


def test_kafka_stop_ignores_a_pid_file_of_another_program(tmp_path):
    home = tmp_path / "kafka"
    home.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "broker.pid").write_text(f"{other.pid}\n")
        result = _fraudstream("kafka", "stop", "--home", str(home))
        assert result.returncode == 0
        assert "No Kafka broker started from" in result.stdout
        assert other.poll() is None, "stop signalled a process that is not its broker"
    finally:
        other.kill()


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
