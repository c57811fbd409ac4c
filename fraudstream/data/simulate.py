"""A simulator of card payments with labelled fraud, vectorised with NumPy.

The genuine traffic follows the reference simulator of the Fraud Detection Handbook
(Le Borgne et al., section 3.2), placed on a real map:

- a customer holds one card, lives near a real city (``resources/cities.csv``), and has
  a spending profile as in the handbook: mean amount ~ U(5, 100), spread = mean / 2,
  transactions per day ~ U(0, 4), each day's count Poisson, times of day
  ~ N(noon, 20,000 s) cut to the day;
- merchants are card-present terminals (``pos``), cash machines (``atm``) or web shops
  (``ecom``, located at their seat); a customer pays at the terminals nearest home and
  at a few web shops;
- some customers travel: they fly (or drive) to another city at a plausible speed, pay
  at terminals there, and come back; no payment is made while they are on the way;
- some cards are issued after the first day and have no payment before it.

Fraud scenarios, each switchable and tagged in the label events:

=  =======================  ===========================================================
a  ``amount_threshold``     every payment above 220 is fraud (the handbook's baseline)
b  ``compromised_terminal`` each day 2 terminals (per 10,000) are compromised: all their
                            payments of the next 28 days are fraud
c  ``leaked_card``          each day 3 cards (per 5,000) leak: a third of their payments
                            of the next 14 days are fraud, with the amount times 5
d  ``cloned_card``          each day 1 card (per 5,000) is cloned and used at terminals
                            at least 1,000 km from home for 7 days, while its holder keeps
                            paying at home: travel that would be impossible
e  ``card_testing``         each day 2 cards (per 5,000) get a burst of 3-8 small web
                            payments within minutes, then one large web payment
=  =======================  ===========================================================

Drift on purpose: ``shift_day`` and ``shifts`` change behaviour from a given day on, so
that model monitoring has something to see. ``amounts`` multiplies the amounts of the
genuine payments from that day on (the customers' spending changes; the fraud scenarios
then apply to the new amounts: scenario a's rule still calls every payment above 220
fraud). Before the day the output is the same as without the shift.

Scenarios a-c reproduce the handbook's (same rates at its scale, 5,000 customers and
10,000 terminals); d and e add fraud that depends on where and how fast a card is used.
Every fraudulent payment gets one label event (``label=fraud``, ``source=chargeback``)
reported after a chargeback delay; a payment without a fraud label is genuine.

The same seed gives the same output; each part of the simulation draws from its own
random stream, so switching a scenario off leaves the genuine traffic unchanged.
"""

from __future__ import annotations

import collections
import csv
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree

from fraudstream import lake, schemas
from fraudstream.errors import DataError
from fraudstream.features import haversine_km

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
KM_PER_DEGREE = 111.195

SCENARIOS = {
    "a": "amount_threshold",
    "b": "compromised_terminal",
    "c": "leaked_card",
    "d": "cloned_card",
    "e": "card_testing",
}

# Handbook parameters (section 3.2 of the Fraud Detection Handbook).
AMOUNT_MEAN_RANGE = (5.0, 100.0)
TX_PER_DAY_RANGE = (0.0, 4.0)
TIME_OF_DAY_MEAN_S = 43_200.0
TIME_OF_DAY_STD_S = 20_000.0
FRAUD_AMOUNT_THRESHOLD = 220.0
COMPROMISED_TERMINALS_PER_DAY = 2.0  # per 10,000 terminals
COMPROMISED_TERMINAL_DAYS = 28
LEAKED_CARDS_PER_DAY = 3.0  # per 5,000 customers
LEAKED_CARD_DAYS = 14
LEAKED_CARD_FRAUD_SHARE = 1 / 3
LEAKED_CARD_AMOUNT_FACTOR = 5.0
HANDBOOK_CUSTOMERS = 5000
HANDBOOK_TERMINALS = 10_000

# Our own scenarios.
CLONED_CARDS_PER_DAY = 1.0  # per 5,000 customers
CLONED_CARD_DAYS = 7
CLONED_CARD_MIN_KM = 1000.0
CLONED_CARD_TX_PER_DAY = 2.0
TESTED_CARDS_PER_DAY = 2.0  # per 5,000 customers
CARD_TEST_SMALL_RANGE = (3, 8)
CARD_TEST_SMALL_AMOUNT = (0.5, 3.0)
CARD_TEST_LARGE_AMOUNT = (300.0, 1500.0)

# The map and the merchants.
TERMINALS_NEAR_HOME = 50
ECOM_SHOPS_PER_CUSTOMER = 4
ECOM_SHARE_RANGE = (0.05, 0.3)
TERMINAL_KIND_SHARES = {"pos": 0.85, "atm": 0.05, "ecom": 0.10}
TERMINALS_ABROAD_SHARE = 0.08
POS_CATEGORIES = {
    "grocery": 0.28,
    "restaurant": 0.18,
    "fuel": 0.12,
    "retail": 0.14,
    "pharmacy": 0.07,
    "electronics": 0.05,
    "entertainment": 0.06,
    "travel": 0.04,
    "health": 0.06,
}
ECOM_CATEGORIES = {
    "online_retail": 0.45,
    "digital_goods": 0.2,
    "travel": 0.15,
    "electronics": 0.1,
    "food_delivery": 0.1,
}
ATM_CATEGORY = "cash_withdrawal"

# Travel.
TRAVELLER_SHARE = 0.25
TRIP_BLOCK_DAYS = 30
TRIP_PROBABILITY_PER_BLOCK = 0.35
TRIP_DAYS_RANGE = (2, 9)
FLIGHT_KMH = 750.0
FLIGHT_OVERHEAD_H = 1.5
DRIVE_KMH = 90.0
DRIVE_OVERHEAD_H = 0.5
DRIVE_MAX_KM = 300.0

# Cards issued after the first day.
LATE_CARD_SHARE = 0.1

# Behaviour shifts from a given day (``SimulationConfig.shifts``): kind -> what it does.
SHIFT_KINDS = {"amounts": "genuine payments' amounts multiplied by the factor"}

# Chargeback delay: log-normal days, median 6, cut to [1, 45].
LABEL_DELAY_MEDIAN_DAYS = 6.0
LABEL_DELAY_SIGMA = 0.5
LABEL_DELAY_RANGE_DAYS = (1.0, 45.0)


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulator; the defaults reproduce the handbook's scale."""

    customers: int = HANDBOOK_CUSTOMERS
    terminals: int = HANDBOOK_TERMINALS
    days: int = 183
    start_date: date = date(2018, 4, 1)
    seed: int = 0
    scenarios: frozenset[str] = field(default_factory=lambda: frozenset(SCENARIOS))
    #: The day (0 is ``start_date``) from which ``shifts`` apply; None: no shift.
    shift_day: int | None = None
    #: Behaviour shifts as (kind, factor) pairs, kinds of :data:`SHIFT_KINDS`.
    shifts: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        unknown_shifts = {kind for kind, _ in self.shifts} - set(SHIFT_KINDS)
        if unknown_shifts:
            raise DataError(
                f"Unknown shift(s) {', '.join(sorted(unknown_shifts))}: choose from "
                f"{', '.join(SHIFT_KINDS)}."
            )
        if self.shifts and self.shift_day is None:
            raise DataError("A shift needs the day it starts on (shift_day, --shift-day).")
        if any(factor <= 0 for _, factor in self.shifts):
            raise DataError("A shift's factor must be above 0.")
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise DataError(
                f"Unknown fraud scenario(s) {', '.join(sorted(unknown))}: "
                "choose from a, b, c, d, e."
            )
        if self.customers < 1 or self.terminals < 10 or self.days < 1:
            raise DataError("Need at least 1 customer, 10 terminals and 1 day.")


@dataclass
class _World:
    """Cities, customers and terminals: everything that does not change over time."""

    cities: dict[str, np.ndarray]
    home_lat: np.ndarray
    home_lon: np.ndarray
    home_city: np.ndarray
    amount_mean: np.ndarray
    amount_std: np.ndarray
    tx_per_day: np.ndarray
    ecom_share: np.ndarray
    first_day: np.ndarray
    traveller: np.ndarray
    near_home: np.ndarray  # (customers, TERMINALS_NEAR_HOME) terminal indices
    near_home_size: np.ndarray  # how many of each row are valid
    ecom_shops: np.ndarray  # (customers, ECOM_SHOPS_PER_CUSTOMER)
    near_city: np.ndarray  # (cities, TERMINALS_NEAR_HOME) terminal indices
    near_city_size: np.ndarray
    terminal_lat: np.ndarray
    terminal_lon: np.ndarray
    terminal_city: np.ndarray
    terminal_kind: np.ndarray  # index into CHANNELS
    terminal_category: np.ndarray  # object array of str
    ecom_terminals: np.ndarray
    card_ids: pa.StringArray
    customer_ids: pa.StringArray
    merchant_ids: pa.StringArray


# --- helpers --------------------------------------------------------------------------


def load_cities() -> dict[str, np.ndarray]:
    """Return the shipped table of cities as column arrays."""
    text = resources.files("fraudstream.resources").joinpath("cities.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return {
        "city": np.array([r["city"] for r in rows], dtype=object),
        "country": np.array([r["country"] for r in rows], dtype=object),
        "currency": np.array([r["currency"] for r in rows], dtype=object),
        "lat": np.array([float(r["lat"]) for r in rows]),
        "lon": np.array([float(r["lon"]) for r in rows]),
        "population": np.array([float(r["population_k"]) for r in rows]),
        "spread_km": np.array([float(r["spread_km"]) for r in rows]),
        "residents": np.array([r["residents"] == "1" for r in rows]),
    }


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _scatter(rng, lat, lon, spread_km):
    """Points around (lat, lon), normally spread by ``spread_km`` in each direction."""
    north = rng.normal(0.0, spread_km)
    east = rng.normal(0.0, spread_km)
    new_lat = np.clip(lat + north / KM_PER_DEGREE, -89.9, 89.9)
    new_lon = lon + east / (KM_PER_DEGREE * np.cos(np.radians(new_lat)))
    return new_lat, (new_lon + 180.0) % 360.0 - 180.0


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on 64-bit integers, so distinct in, distinct out."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


_HEX_PAIRS = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2").view(np.uint16)


def make_tokens(prefix: str, count: int, key: int) -> pa.StringArray:
    """Return ``count`` distinct tokens ``prefix`` + 16 hex digits, deterministic in ``key``.

    Built as one Arrow buffer of fixed-width strings: millions of ids in a fraction of
    a second, where Python strings would take many seconds.
    """
    with np.errstate(over="ignore"):
        raw = _mix64(
            np.arange(count, dtype=np.uint64) + np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
        )
    digits = _HEX_PAIRS[raw.astype(">u8").view(np.uint8).reshape(-1, 8)].view(np.uint8)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    width = head.size + 16
    text = np.empty((count, width), dtype=np.uint8)
    text[:, : head.size] = head
    text[:, head.size :] = digits.reshape(count, 16)
    offsets = np.arange(count + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())]
    )


def _per_day_counts(rng, rate: float, days: int) -> np.ndarray:
    """Counts per day with mean ``rate``: its integer part every day, plus one by chance."""
    whole = int(np.floor(rate))
    return whole + (rng.random(days) < rate - whole).astype(int)


def _choice(rng, weights: dict[str, float], size: int) -> np.ndarray:
    names = np.array(list(weights), dtype=object)
    p = np.array(list(weights.values()))
    return names[rng.choice(len(names), size=size, p=p / p.sum())]


# --- the world ------------------------------------------------------------------------


def _nearest_in_city(lat, lon, city, present, terminal_lat, terminal_lon, terminal_city):
    """The card-present terminals nearest each point, among those of the point's city.

    People shop in their own city, so a pool never spans two cities (which would
    make ordinary shopping look like travel). A city with fewer terminals than
    ``TERMINALS_NEAR_HOME`` gives a smaller pool; one with none falls back to the
    nearest terminals anywhere.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Terminal indices, shape (points, TERMINALS_NEAR_HOME), and each row's valid size.
    """
    k = min(TERMINALS_NEAR_HOME, present.size)
    pools = np.zeros((len(lat), k), dtype=np.int64)
    sizes = np.zeros(len(lat), dtype=np.int64)
    points = _unit_vectors(np.asarray(lat), np.asarray(lon))
    for c in np.unique(city):
        rows = np.flatnonzero(city == c)
        candidates = present[terminal_city[present] == c]
        if candidates.size == 0:
            candidates = present
        kk = min(k, candidates.size)
        tree = cKDTree(_unit_vectors(terminal_lat[candidates], terminal_lon[candidates]))
        _, nearest = tree.query(points[rows], k=kk)
        pools[rows, :kk] = candidates[np.asarray(nearest).reshape(rows.size, kk)]
        sizes[rows] = kk
    return pools, sizes


def _pick(rng, pools: np.ndarray, sizes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One terminal, uniformly, from the valid part of each given pool row."""
    return pools[rows, np.floor(rng.random(rows.size) * sizes[rows]).astype(np.int64)]


def _build_world(cfg: SimulationConfig, streams: dict[str, np.random.Generator]) -> _World:
    rng = streams["customers"]
    cities = load_cities()
    n = cfg.customers
    resident_p = np.where(cities["residents"], cities["population"], 0.0)
    home_city = rng.choice(len(resident_p), size=n, p=resident_p / resident_p.sum())
    home_lat, home_lon = _scatter(
        rng, cities["lat"][home_city], cities["lon"][home_city], cities["spread_km"][home_city]
    )
    amount_mean = rng.uniform(*AMOUNT_MEAN_RANGE, size=n)
    tx_per_day = rng.uniform(*TX_PER_DAY_RANGE, size=n)
    ecom_share = rng.uniform(*ECOM_SHARE_RANGE, size=n)
    late = rng.random(n) < LATE_CARD_SHARE
    first_day = np.where(late, rng.integers(0, max(cfg.days, 1), size=n), 0)
    traveller = rng.random(n) < TRAVELLER_SHARE

    rng = streams["terminals"]
    m = cfg.terminals
    kinds = np.array(schemas.CHANNELS)
    terminal_kind = rng.choice(
        len(kinds), size=m, p=[TERMINAL_KIND_SHARES[k] for k in schemas.CHANNELS]
    )
    abroad = rng.random(m) < TERMINALS_ABROAD_SHARE
    world_p = np.where(cities["residents"], 0.0, cities["population"])
    terminal_city = np.where(
        abroad,
        rng.choice(len(world_p), size=m, p=world_p / world_p.sum()),
        rng.choice(len(resident_p), size=m, p=resident_p / resident_p.sum()),
    )
    is_ecom = kinds[terminal_kind] == "ecom"
    # Web shops sit at their seat, near a city centre; terminals spread like people.
    spread = np.where(is_ecom, 2.0, cities["spread_km"][terminal_city])
    terminal_lat, terminal_lon = _scatter(
        rng, cities["lat"][terminal_city], cities["lon"][terminal_city], spread
    )
    terminal_category = np.where(
        is_ecom, _choice(rng, ECOM_CATEGORIES, m), _choice(rng, POS_CATEGORIES, m)
    )
    terminal_category = np.where(kinds[terminal_kind] == "atm", ATM_CATEGORY, terminal_category)

    present = np.flatnonzero(~is_ecom)
    ecom_terminals = np.flatnonzero(is_ecom)
    if ecom_terminals.size == 0:
        ecom_terminals = present[:1]
    near_home, near_home_size = _nearest_in_city(
        home_lat, home_lon, home_city, present, terminal_lat, terminal_lon, terminal_city
    )
    city_index = np.arange(len(cities["city"]))
    near_city, near_city_size = _nearest_in_city(
        cities["lat"], cities["lon"], city_index, present, terminal_lat, terminal_lon, terminal_city
    )
    ecom_shops = ecom_terminals[
        rng.integers(0, ecom_terminals.size, size=(n, ECOM_SHOPS_PER_CUSTOMER))
    ]

    key = cfg.seed & 0xFFFFFFFF
    return _World(
        cities=cities,
        home_lat=home_lat,
        home_lon=home_lon,
        home_city=home_city,
        amount_mean=amount_mean,
        amount_std=amount_mean / 2,
        tx_per_day=tx_per_day,
        ecom_share=ecom_share,
        first_day=first_day,
        traveller=traveller,
        near_home=near_home,
        near_home_size=near_home_size,
        ecom_shops=ecom_shops,
        near_city=near_city,
        near_city_size=near_city_size,
        terminal_lat=terminal_lat,
        terminal_lon=terminal_lon,
        terminal_city=terminal_city,
        terminal_kind=terminal_kind,
        terminal_category=terminal_category,
        ecom_terminals=ecom_terminals,
        card_ids=make_tokens("card_", n, key * 3 + 1),
        customer_ids=make_tokens("cust_", n, key * 3 + 2),
        merchant_ids=make_tokens("m_", m, key * 3 + 3),
    )


# --- genuine traffic ------------------------------------------------------------------


def _genuine(
    cfg: SimulationConfig, world: _World, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    n, days = cfg.customers, cfg.days
    counts = rng.poisson(np.repeat(world.tx_per_day[:, None], days, axis=1))
    customer = np.repeat(np.repeat(np.arange(n), days), counts.ravel())
    day = np.repeat(np.tile(np.arange(days), n), counts.ravel())
    seconds = rng.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, size=customer.size)
    amount = rng.normal(world.amount_mean[customer], world.amount_std[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * world.amount_mean[customer[negative]])
    online = rng.random(customer.size) < world.ecom_share[customer]
    # After every draw, so the days before the shift stay as they were without it.
    for kind, factor in cfg.shifts:
        if kind == "amounts" and cfg.shift_day is not None:
            amount[day >= cfg.shift_day] *= factor
    terminal = np.where(
        online,
        world.ecom_shops[customer, rng.integers(0, ECOM_SHOPS_PER_CUSTOMER, size=customer.size)],
        _pick(rng, world.near_home, world.near_home_size, customer),
    )
    # Times outside the day are dropped, as in the handbook; so are payments before the
    # card was issued.
    keep = (seconds > 0) & (seconds < 86_400) & (day >= world.first_day[customer])
    time_ms = day * DAY_MS + np.floor(seconds * 1000).astype(np.int64)
    return {
        "customer": customer[keep],
        "time_ms": time_ms[keep],
        "amount": np.maximum(np.round(amount[keep], 2), 0.01),
        "terminal": terminal[keep],
        "online": online[keep],
    }


def _travel_time_ms(km: np.ndarray) -> np.ndarray:
    hours = np.where(
        km <= DRIVE_MAX_KM,
        km / DRIVE_KMH + DRIVE_OVERHEAD_H,
        km / FLIGHT_KMH + FLIGHT_OVERHEAD_H,
    )
    return np.ceil(hours * HOUR_MS).astype(np.int64)


def _apply_travel(
    cfg: SimulationConfig, world: _World, tx: dict, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Move card-present payments made during a trip to the destination; drop those en route."""
    blocks = max(cfg.days // TRIP_BLOCK_DAYS, 1)
    travellers = np.flatnonzero(world.traveller)
    trip_customer = np.repeat(travellers, blocks)
    trip_block = np.tile(np.arange(blocks), travellers.size)
    taken = rng.random(trip_customer.size) < TRIP_PROBABILITY_PER_BLOCK
    trip_customer, trip_block = trip_customer[taken], trip_block[taken]
    length = rng.integers(TRIP_DAYS_RANGE[0], TRIP_DAYS_RANGE[1] + 1, size=trip_customer.size)
    block_days = min(TRIP_BLOCK_DAYS, cfg.days)
    first = trip_block * TRIP_BLOCK_DAYS + rng.integers(
        0, np.maximum(block_days - length - 1, 1), size=trip_customer.size
    )
    cities = world.cities
    p = cities["population"] / cities["population"].sum()
    destination = rng.choice(p.size, size=trip_customer.size, p=p)
    at_home = destination == world.home_city[trip_customer]
    destination[at_home] = (destination[at_home] + 1) % p.size
    km = haversine_km(
        world.home_lat[trip_customer],
        world.home_lon[trip_customer],
        cities["lat"][destination],
        cities["lon"][destination],
    )
    journey = _travel_time_ms(km)
    depart = first * DAY_MS + rng.integers(6 * HOUR_MS, 20 * HOUR_MS, size=first.size)
    arrive = depart + journey
    back = (first + length) * DAY_MS + rng.integers(8 * HOUR_MS, 20 * HOUR_MS, size=first.size)
    home_again = back + journey

    # Trips of one customer never overlap (one per block), so each payment falls in at
    # most one: the last trip that departed before it.
    span = np.int64(1) << np.int64(42)
    order = np.lexsort((depart, trip_customer))
    trip_key = trip_customer[order].astype(np.int64) * span + depart[order]
    tx_key = tx["customer"].astype(np.int64) * span + tx["time_ms"]
    idx = np.searchsorted(trip_key, tx_key, side="right") - 1
    has = idx >= 0
    idx = np.where(has, idx, 0)
    trip = order[idx]
    in_trip = has & (trip_customer[trip] == tx["customer"]) & (tx["time_ms"] < home_again[trip])
    t = tx["time_ms"]
    en_route = in_trip & (((t >= depart[trip]) & (t < arrive[trip])) | (t >= back[trip]))
    away = in_trip & (t >= arrive[trip]) & (t < back[trip]) & ~tx["online"]
    tx["terminal"] = tx["terminal"].copy()
    tx["terminal"][away] = _pick(
        rng, world.near_city, world.near_city_size, destination[trip[away]]
    )
    return {name: values[~en_route] for name, values in tx.items()}


# --- fraud ----------------------------------------------------------------------------


def _scaled_rate(rate: float, actual: int, reference: int) -> float:
    return rate * actual / reference


def _compromised_days(rng, rate: float, population: int, days: int, duration: int) -> np.ndarray:
    """Which of ``population`` (terminals or cards) are compromised on which day.

    Each day about ``rate`` of them are picked and stay compromised for ``duration``
    days from that day on (the handbook's scenarios b and c).
    """
    compromised = np.zeros((population, days), dtype=bool)
    for d, count in enumerate(_per_day_counts(rng, rate, days)):
        chosen = rng.choice(population, size=count, replace=False)
        compromised[chosen, d : d + duration] = True
    return compromised


def _fraud_base(cfg: SimulationConfig, tx: dict, streams) -> tuple[np.ndarray, np.ndarray]:
    """Scenarios a-c on the genuine traffic, in the handbook's order (a later one wins).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Each payment's scenario letter ('' if genuine), and the amounts after scenario c.
    """
    scenario = np.full(tx["customer"].size, "", dtype="<U1")
    amount = tx["amount"]
    day = tx["time_ms"] // DAY_MS
    if "a" in cfg.scenarios:
        scenario[tx["amount"] > FRAUD_AMOUNT_THRESHOLD] = "a"
    if "b" in cfg.scenarios:
        rate = _scaled_rate(COMPROMISED_TERMINALS_PER_DAY, cfg.terminals, HANDBOOK_TERMINALS)
        compromised = _compromised_days(
            streams["b"], rate, cfg.terminals, cfg.days, COMPROMISED_TERMINAL_DAYS
        )
        scenario[compromised[tx["terminal"], day]] = "b"
    if "c" in cfg.scenarios:
        rng = streams["c"]
        rate = _scaled_rate(LEAKED_CARDS_PER_DAY, cfg.customers, HANDBOOK_CUSTOMERS)
        leaked = _compromised_days(rng, rate, cfg.customers, cfg.days, LEAKED_CARD_DAYS)
        hit = leaked[tx["customer"], day] & (rng.random(day.size) < LEAKED_CARD_FRAUD_SHARE)
        amount = np.where(hit, np.round(amount * LEAKED_CARD_AMOUNT_FACTOR, 2), amount)
        scenario[hit] = "c"
    return scenario, amount


def _active_cards(world: _World, day: int, count: int, rng) -> np.ndarray:
    active = np.flatnonzero(world.first_day <= day)
    return rng.choice(active, size=min(count, active.size), replace=False)


def _cloned_cards(cfg: SimulationConfig, world: _World, rng) -> dict[str, np.ndarray]:
    """Scenario d: payments with a cloned card, far from where its holder keeps paying."""
    cities = world.cities
    rate = _scaled_rate(CLONED_CARDS_PER_DAY, cfg.customers, HANDBOOK_CUSTOMERS)
    parts = []
    for d, count in enumerate(_per_day_counts(rng, rate, cfg.days)):
        for card in _active_cards(world, d, count, rng):
            km = haversine_km(
                world.home_lat[card], world.home_lon[card], cities["lat"], cities["lon"]
            )
            far = np.flatnonzero(km >= CLONED_CARD_MIN_KM)
            city = rng.choice(far, p=cities["population"][far] / cities["population"][far].sum())
            per_day = rng.poisson(CLONED_CARD_TX_PER_DAY, size=CLONED_CARD_DAYS)
            tx_day = d + np.repeat(np.arange(CLONED_CARD_DAYS), per_day)
            size = tx_day.size
            terminal = _pick(rng, world.near_city, world.near_city_size, np.full(size, city))
            amount = world.amount_mean[card] * rng.uniform(1.5, 4.0, size=size)
            cash = np.array(schemas.CHANNELS)[world.terminal_kind[terminal]] == "atm"
            amount = np.where(cash, np.maximum(np.round(amount / 20) * 20, 20), np.round(amount, 2))
            parts.append(
                {
                    "customer": np.full(size, card),
                    "time_ms": tx_day * DAY_MS + rng.integers(8 * HOUR_MS, 23 * HOUR_MS, size=size),
                    "amount": amount,
                    "terminal": terminal,
                }
            )
    return _concat(parts)


def _card_testing(cfg: SimulationConfig, world: _World, rng) -> dict[str, np.ndarray]:
    """Scenario e: a burst of small web payments, then a large one."""
    rate = _scaled_rate(TESTED_CARDS_PER_DAY, cfg.customers, HANDBOOK_CUSTOMERS)
    parts = []
    for d, count in enumerate(_per_day_counts(rng, rate, cfg.days)):
        for card in _active_cards(world, d, count, rng):
            small = rng.integers(CARD_TEST_SMALL_RANGE[0], CARD_TEST_SMALL_RANGE[1] + 1)
            start = d * DAY_MS + rng.integers(0, 22 * HOUR_MS)
            gaps = rng.integers(5_000, 120_000, size=small)
            times = start + np.cumsum(gaps)
            times = np.append(times, times[-1] + rng.integers(5 * MINUTE_MS, 60 * MINUTE_MS))
            shops = world.ecom_terminals[rng.integers(0, world.ecom_terminals.size, size=2)]
            amount = np.append(
                np.round(rng.uniform(*CARD_TEST_SMALL_AMOUNT, size=small), 2),
                np.round(rng.uniform(*CARD_TEST_LARGE_AMOUNT), 2),
            )
            parts.append(
                {
                    "customer": np.full(small + 1, card),
                    "time_ms": times,
                    "amount": amount,
                    "terminal": np.append(np.full(small, shops[0]), shops[1]),
                }
            )
    return _concat(parts)


def _concat(parts: list[dict]) -> dict[str, np.ndarray]:
    if not parts:
        return {
            "customer": np.array([], dtype=np.int64),
            "time_ms": np.array([], dtype=np.int64),
            "amount": np.array([], dtype=float),
            "terminal": np.array([], dtype=np.int64),
        }
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


# --- assembly -------------------------------------------------------------------------


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ["customers", "terminals", "genuine", "travel", "b", "c", "d", "e", "labels"]
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def simulate(cfg: SimulationConfig) -> tuple[pa.Table, pa.Table]:
    """Simulate payment events and their label events.

    Returns
    -------
    (pyarrow.Table, pyarrow.Table)
        Payments in the contract's schema sorted by ``event_time``, and one fraud label
        event per fraudulent payment (with its ``scenario``) sorted by ``reported_time``.
    """
    streams = _streams(cfg.seed)
    world = _build_world(cfg, streams)
    tx = _genuine(cfg, world, streams["genuine"])
    tx = _apply_travel(cfg, world, tx, streams["travel"])
    scenario, tx["amount"] = _fraud_base(cfg, tx, streams)
    extra = []
    if "d" in cfg.scenarios:
        extra.append((_cloned_cards(cfg, world, streams["d"]), "d"))
    if "e" in cfg.scenarios:
        extra.append((_card_testing(cfg, world, streams["e"]), "e"))
    columns = ["customer", "time_ms", "amount", "terminal"]
    for part, letter in extra:
        inside = part["time_ms"] < cfg.days * DAY_MS
        for name in columns:
            tx[name] = np.concatenate([tx[name], part[name][inside]])
        scenario = np.concatenate([scenario, np.full(int(inside.sum()), letter)])
    return _tables(cfg, world, tx, scenario, streams["labels"])


def _lookup(values: np.ndarray, index: np.ndarray) -> pa.Array:
    """``values[index]`` as Arrow strings, taken in Arrow (no Python string per row)."""
    return pa.array(values.tolist(), pa.string()).take(pa.array(index))


def _tables(cfg, world, tx, scenario, rng) -> tuple[pa.Table, pa.Table]:
    order = np.lexsort((tx["terminal"], tx["customer"], tx["time_ms"]))
    customer = tx["customer"][order]
    terminal = tx["terminal"][order]
    scenario = scenario[order]
    start = cfg.start_date
    start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    event_ms = start_ms + tx["time_ms"][order]
    city = world.terminal_city[terminal]
    channels = np.array(schemas.CHANNELS, dtype=object)
    transaction_ids = make_tokens("t", order.size, (cfg.seed & 0xFFFFFFFF) * 3 + 4)
    card_ids = world.card_ids.take(customer)
    payments = pa.table(
        {
            "transaction_id": transaction_ids,
            "event_time": pa.array(event_ms, pa.timestamp("ms", tz="UTC")),
            "card_id": card_ids,
            "customer_id": world.customer_ids.take(customer),
            "merchant_id": world.merchant_ids.take(terminal),
            "merchant_category": _lookup(world.terminal_category, terminal),
            "amount": pa.array(tx["amount"][order], pa.float64()),
            "currency": _lookup(world.cities["currency"], city),
            "channel": _lookup(channels, world.terminal_kind[terminal]),
            "lat": pa.array(np.round(world.terminal_lat[terminal], 5), pa.float64()),
            "lon": pa.array(np.round(world.terminal_lon[terminal], 5), pa.float64()),
            "country": _lookup(world.cities["country"], city),
            "schema_version": pa.array(
                np.full(order.size, schemas.SCHEMA_VERSION, dtype=np.int32), pa.int32()
            ),
        },
        schema=schemas.PAYMENT_ARROW_SCHEMA,
    )
    fraud = np.flatnonzero(scenario != "")
    delay_days = np.clip(
        rng.lognormal(np.log(LABEL_DELAY_MEDIAN_DAYS), LABEL_DELAY_SIGMA, size=fraud.size),
        *LABEL_DELAY_RANGE_DAYS,
    )
    names = np.array([SCENARIOS[letter] for letter in scenario[fraud]], dtype=object)
    labels = pa.table(
        {
            "transaction_id": transaction_ids.take(fraud),
            "card_id": card_ids.take(fraud),
            "label": pa.array(np.full(fraud.size, "fraud", dtype=object), pa.string()),
            "source": pa.array(np.full(fraud.size, "chargeback", dtype=object), pa.string()),
            "reported_time": pa.array(
                event_ms[fraud] + np.round(delay_days * DAY_MS).astype(np.int64),
                pa.timestamp("ms", tz="UTC"),
            ),
            "scenario": pa.array(names, pa.string()),
            "schema_version": pa.array(
                np.full(fraud.size, schemas.SCHEMA_VERSION, dtype=np.int32), pa.int32()
            ),
        },
        schema=schemas.LABEL_ARROW_SCHEMA,
    ).sort_by([("reported_time", "ascending")])
    return payments, labels


def generate(cfg: SimulationConfig, out: Path) -> dict[str, int]:
    """Simulate and write ``out/events`` and ``out/labels``; return counts."""
    payments, labels = simulate(cfg)
    return {
        "events": lake.write_events(payments, Path(out)),
        "labels": lake.write_labels(labels, Path(out)),
    }


@dataclass(frozen=True)
class GenerateConfig:
    """What the generate job simulates, and the folder it writes events and labels to."""

    simulation: SimulationConfig
    out: Path


def run(cfg: GenerateConfig) -> dict:
    """Simulate, write the Parquet folders, and return counts for the summary."""
    payments, labels = simulate(cfg.simulation)
    lake.write_events(payments, cfg.out)
    lake.write_labels(labels, cfg.out)
    per_scenario = collections.Counter(labels.column("scenario").to_pylist())
    return {"events": payments.num_rows, "labels": labels.num_rows, "per_scenario": per_scenario}


def summary(cfg: GenerateConfig, counts: dict, seconds: float) -> str:
    """The generate job's report: what it wrote, the fraud rate, frauds by scenario."""
    events, frauds = counts["events"], counts["labels"]
    lines = [
        f"Wrote {events:,} payment events and {frauds:,} fraud labels to {cfg.out} "
        f"in {seconds:.1f} s (fraud rate {frauds / max(events, 1):.2%}).",
    ]
    for letter, name in SCENARIOS.items():
        if letter in cfg.simulation.scenarios:
            lines.append(f"  {letter} {name:<22} {counts['per_scenario'].get(name, 0):>9,} frauds")
    return "\n".join(lines)
