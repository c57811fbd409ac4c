"""How fast the ops dashboard fills and renders with many alerts in the topic.

Publishes ``--alerts`` alerts to a new topic on the broker, starts the dashboard in this
process, waits until its window holds what the refill reads back, then loads the page in
headless Chromium ``--repeat`` times and reports the time until its first 100 rows show.

    .venv/bin/python bench/bench_dashboard.py --alerts 10000 --window 10000 --refill 10000
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from fraudstream import config, schemas
from fraudstream.kafka import clients
from fraudstream.ops import broker as local_broker
from fraudstream.scoring import reasons
from fraudstream.ui import dashboard


def alerts(count: int) -> list[dict]:
    start = datetime(2026, 3, 14, tzinfo=UTC)
    rows = []
    for n in range(count):
        transaction_id = f"tx_bench_{n:07d}"
        rows.append(
            {
                "alert_id": reasons.alert_id(transaction_id, "fraudstream", "7"),
                "transaction_id": transaction_id,
                "card_id": f"card_{n % 997:04d}",
                "event_time": start + timedelta(seconds=n),
                "scored_time": start + timedelta(seconds=n + 2),
                "score": 0.9,
                "threshold": 0.5,
                "model_name": "fraudstream",
                "model_version": "7",
                "reasons": [f"{reasons.describe('amount_to_card_mean', 8.2)} (+0.17)"],
                "amount": 100.0 + n % 500,
                "currency": "EUR",
                "merchant_id": f"m_{n % 50:03d}",
                "merchant_category": ("grocery", "travel", "electronics")[n % 3],
                "lat": 48.85,
                "lon": 2.35,
                "country": "FR",
                "schema_version": schemas.SCHEMA_VERSION,
            }
        )
    return rows


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=None)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=5000)
    parser.add_argument("--refill", type=int, default=500, help="per partition")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    servers = config.bootstrap_servers(args.brokers)
    topic = f"bench-alerts-{uuid.uuid4().hex[:8]}"
    local_broker.create_topics(servers, {topic: {}}, partitions=args.partitions)
    producer = clients.producer(servers)
    for alert in alerts(args.alerts):
        producer.send(topic, key=alert["card_id"].encode(), value=schemas.encode_alert(alert))
    producer.flush()
    producer.close()
    expected = min(args.window, args.alerts, args.refill * args.partitions)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with TemporaryDirectory() as lake:
        settings = dashboard.Settings(
            bootstrap_servers=servers,
            alerts_topic=topic,
            labels_topic=config.TOPIC_LABELS,
            lake=Path(lake),
            group=f"bench-{uuid.uuid4().hex[:8]}",
            port=port,
            window=args.window,
            refill_per_partition=args.refill,
        )
        board = dashboard.Dashboard(settings)
        started = time.monotonic()
        board.start()
        web = dashboard.server(board)
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        while len(board.window) < expected or not web.started:
            time.sleep(0.01)
        filled = time.monotonic() - started
        loads = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page()
            for _ in range(args.repeat):
                begin = time.monotonic()
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.locator("#alerts tbody tr")).to_have_count(100)
                loads.append(time.monotonic() - begin)
            browser.close()
        board.hub.publish(None)
        web.should_exit = True
        thread.join(10)
        board.stop()
    runs = ", ".join(f"{s:.2f}" for s in loads)
    print(
        f"{args.alerts:,} alerts in {topic}: window of {expected:,} filled in {filled:.2f} s; "
        f"page to 100 rows: median {statistics.median(loads):.2f} s (runs: {runs})"
    )


if __name__ == "__main__":
    main()
