"""Rate of ``fraudstream produce`` into the local broker, against kafka-python.

Publishes the default simulation (about 1.7 million payments and their labels, made in
memory by the simulator) with the producer ``fraudstream produce`` uses, from Arrow
tables, as fast as the broker takes it, into fresh topics; and, side by side in the
same run, a sample of it with kafka-python one ``json.dumps`` per event (the producer
this project had before). Each figure is the median of ``--runs`` runs. The encoding
counts: it is part of what a producer must do per event.

    .venv/bin/python bench/bench_produce.py [--runs 3] [--baseline-rows 100000]

Needs a broker (``fraudstream kafka start``); the topics it makes are deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from fraudstream import config, schemas
from fraudstream.data import produce, simulate
from fraudstream.ops import broker


def _topics(servers: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"payments": f"bench-payments-{suffix}", "labels": f"bench-labels-{suffix}"}
    broker.create_topics(servers, {name: {} for name in names.values()}, partitions=4)
    return names


def _delete(servers: str, topics: list[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()


class _Quiet(produce.Progress):
    def update(self, position, force=False):
        pass

    def end(self):
        pass


def run_fraudstream(plan: produce.Plan, servers: str) -> float:
    topics = _topics(servers)
    began = time.perf_counter()
    reached = produce.run(
        plan,
        servers,
        payments_topic=topics["payments"],
        labels_topic=topics["labels"],
        progress=_Quiet(plan.total.payments),
    )
    seconds = time.perf_counter() - began
    assert reached == plan.total, (reached, plan.total)
    assert produce.topic_size(servers, topics["payments"]) == plan.total.payments
    _delete(servers, list(topics.values()))
    return plan.total.payments / seconds


def run_kafka_python(plan: produce.Plan, servers: str, rows: int) -> float:
    from fraudstream.kafka import clients

    topics = _topics(servers)
    table = plan.payments.slice(0, rows)
    producer = clients.producer(servers)
    began = time.perf_counter()
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            producer.send(
                topics["payments"],
                key=row["card_id"].encode(),
                value=schemas.encode_payment(row),
            )
    producer.flush()
    seconds = time.perf_counter() - began
    producer.close()
    _delete(servers, list(topics.values()))
    return table.num_rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--brokers", default=config.DEFAULT_BOOTSTRAP_SERVERS)
    args = parser.parse_args()

    began = time.perf_counter()
    payments, labels = simulate.simulate(simulate.SimulationConfig())
    plan = produce.make_plan("bench", payments, labels)
    print(
        f"simulated {plan.total.payments:,} payments and {plan.total.labels:,} labels "
        f"in {time.perf_counter() - began:.1f} s"
    )
    ours, theirs = [], []
    for run in range(1, args.runs + 1):
        ours.append(run_fraudstream(plan, args.brokers))
        theirs.append(run_kafka_python(plan, args.brokers, args.baseline_rows))
        print(
            f"run {run}: fraudstream produce {ours[-1]:,.0f} payments/s "
            f"(all {plan.total.payments:,} with labels); "
            f"kafka-python {theirs[-1]:,.0f} payments/s ({args.baseline_rows:,})",
            flush=True,
        )
    median, baseline = statistics.median(ours), statistics.median(theirs)
    print(
        f"median of {args.runs}: fraudstream produce {median:,.0f} payments/s; "
        f"kafka-python {baseline:,.0f} payments/s; ratio {median / baseline:.1f}x"
    )


if __name__ == "__main__":
    main()
