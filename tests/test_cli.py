"""The ``fraudstream kafka`` command, run as a user runs it."""

from __future__ import annotations

import subprocess

import pytest

from fraudstream.ops import process

from .helpers import busy_port, free_ports, run_cli


def test_kafka_start_on_busy_port_fails_with_one_sentence(tmp_path):
    with busy_port() as port:
        result = run_cli(
            "kafka",
            "start",
            "--home",
            str(tmp_path / "kafka"),
            "--port",
            str(port),
            "--controller-port",
            str(port + 1 if port < 65535 else port - 1),
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"fraudstream: Port {port} on 127.0.0.1 is already in use by another program; "
        "stop it or choose other ports with --port/--controller-port."
    )
    assert not (tmp_path / "kafka" / "broker.pid").exists()


@pytest.mark.kafka  # starts a broker of its own with the command
def test_kafka_start_twice_is_harmless_and_stop_stops_only_its_own(tmp_path):
    home = tmp_path / "kafka"
    ports = free_ports(2)
    args = ["--home", str(home), "--port", str(ports[0]), "--controller-port", str(ports[1])]
    first = run_cli("kafka", "start", *args, "--partitions", "2")
    assert first.returncode == 0, first.stderr
    try:
        assert f"Kafka broker started on 127.0.0.1:{ports[0]}" in first.stdout
        pid = int((home / "broker.pid").read_text())

        second = run_cli("kafka", "start", *args)
        assert second.returncode == 0, second.stderr
        assert f"already running on 127.0.0.1:{ports[0]} (pid {pid}" in second.stdout

        status = run_cli("kafka", "status", *args)
        assert status.returncode == 0
        assert "payments: 2 partitions, kept forever" in status.stdout
        assert "fraud-labels: 2 partitions, kept forever" in status.stdout
        assert "payments-dlq: 2 partitions, kept forever" in status.stdout
        assert "fraud-alerts: 2 partitions" in status.stdout
        assert "fraud-rules: 2 partitions, compacted (each key's newest record)" in status.stdout
        assert "fraud-rules-applied: 2 partitions, kept forever" in status.stdout
    finally:
        stopped = run_cli("kafka", "stop", *args)
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == f"Kafka broker stopped (pid {pid})."
    assert not process.port_in_use("127.0.0.1", ports[0])
    assert run_cli("kafka", "status", *args).returncode == 1


def test_kafka_stop_ignores_a_pid_file_of_another_program(tmp_path):
    home = tmp_path / "kafka"
    home.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        (home / "broker.pid").write_text(f"{other.pid}\n")
        result = run_cli("kafka", "stop", "--home", str(home))
        assert result.returncode == 0
        assert "No Kafka broker started from" in result.stdout
        assert other.poll() is None, "stop signalled a process that is not its broker"
    finally:
        other.kill()
