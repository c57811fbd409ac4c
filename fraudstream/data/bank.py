"""The payments application of the core-banking database: it books card payments.

It stands for the bank's monolith whose commit log ``fraudstream connect`` captures:
each call books its payments in one database transaction (the card and merchant
rows first, where new), and commits it, or rolls it back to show that an uncommitted
payment never reaches the stream.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fraudstream import schemas
from fraudstream.ops.postgres import APP_ROLE, LocalPostgres

#: The booked columns of ``card_payments``: the payment contract without its version.
PAYMENT_COLUMNS = [name for name in schemas.PAYMENT_COLUMNS if name != "schema_version"]

_INSERT_PAYMENT = (
    f"INSERT INTO card_payments ({', '.join(PAYMENT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(PAYMENT_COLUMNS))})"
)


def payments_from_parquet(data: Path, limit: int | None = None) -> list[dict]:
    """Read payment events written by the simulator, oldest first.

    Parameters
    ----------
    data : Path
        A folder holding ``events/`` (e.g. ``data/sample``).
    limit : int, optional
        Read only the first ``limit`` payments.

    Returns
    -------
    list of dict
        The contract's fields, ``event_time`` as an aware ``datetime``.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(data / "events", columns=schemas.PAYMENT_COLUMNS).sort_by(
        [("event_time", "ascending"), ("transaction_id", "ascending")]
    )
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def generate_payments(
    count: int, seed: int | None = None, start: datetime | None = None, cards: int = 5
) -> list[dict]:
    """Make ``count`` valid card payments, a few seconds apart, over a handful of cards.

    Parameters
    ----------
    count : int
        How many payments.
    seed : int, optional
        Seed of the random choices: the same seed gives the same payments (and the
        same transaction ids, which the database accepts once). Default: fresh ones.
    start : datetime, optional
        Time of the first payment (default: now, in UTC).
    cards : int
        How many distinct cards pay.

    Returns
    -------
    list of dict
        Payment events with the contract's fields, ``event_time`` with milliseconds.
    """
    rng = random.Random(seed)
    start = start or datetime.now(UTC)
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)
    prefix = f"{rng.getrandbits(40):010x}"
    payments = []
    event_time = start
    for index in range(count):
        event_time += timedelta(milliseconds=rng.randrange(1, 5000))
        card = rng.randrange(cards)
        channel = rng.choice(["pos", "ecom", "atm"])
        payments.append(
            {
                "transaction_id": f"t{prefix}{index:06d}",
                "event_time": event_time,
                "card_id": f"card_{prefix}{card:04d}",
                "customer_id": f"cust_{prefix}{card:04d}",
                "merchant_id": f"m_{prefix}{rng.randrange(20):04d}",
                "merchant_category": "cash_withdrawal" if channel == "atm" else "retail",
                "amount": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "channel": channel,
                "lat": round(rng.uniform(43, 52), 5),
                "lon": round(rng.uniform(-1, 15), 5),
                "country": "FR",
                "schema_version": schemas.SCHEMA_VERSION,
            }
        )
    return payments


def _by_first(rows: set[tuple]) -> list[tuple]:
    # One order for every booking: two concurrent bookings lock rows in the same order.
    return sorted(rows, key=lambda row: row[0])


def book_payments(postgres: LocalPostgres, payments: list[dict], commit: bool = True) -> int:
    """Book payments in one database transaction, as the bank's application does.

    Parameters
    ----------
    postgres : LocalPostgres
        The cluster holding the bank database.
    payments : list of dict
        Payment events with the contract's fields.
    commit : bool
        Commit the transaction (True) or roll it back (False), after every insert.

    Returns
    -------
    int
        The number of payments committed (0 when rolled back).
    """
    import psycopg

    with psycopg.connect(postgres.conninfo(APP_ROLE)) as connection:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO cards (card_id, customer_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                _by_first({(p["card_id"], p["customer_id"]) for p in payments}),
            )
            cursor.executemany(
                "INSERT INTO merchants (merchant_id, merchant_category) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                _by_first({(p["merchant_id"], p["merchant_category"]) for p in payments}),
            )
            cursor.executemany(
                _INSERT_PAYMENT, [[p.get(name) for name in PAYMENT_COLUMNS] for p in payments]
            )
        if commit:
            connection.commit()
            return len(payments)
        connection.rollback()
        return 0


def unbooked(postgres: LocalPostgres, payments: list[dict]) -> list[dict]:
    """Return the payments whose ``transaction_id`` the bank database does not hold yet.

    Booking a folder's payments again then continues after the ones already booked,
    instead of failing on the first duplicate transaction id.
    """
    import psycopg

    with psycopg.connect(postgres.conninfo(APP_ROLE)) as connection:
        booked = {
            row[0]
            for row in connection.execute(
                "SELECT transaction_id FROM card_payments WHERE transaction_id = ANY(%s)",
                ([p["transaction_id"] for p in payments],),
            )
        }
    return [p for p in payments if p["transaction_id"] not in booked]
