"""The ops dashboard and ``alerts tail``, against the real broker, in a real browser.

The page is driven with Playwright in Debian's headless Chromium (``scripts/setup.sh``
installs it); alerts are published with the contract's encoder, verdicts are read back
from the labels topic.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudstream import schemas
from fraudstream.kafka import clients
from fraudstream.ops import broker as local_broker
from fraudstream.scoring import reasons, rules, viewfiles
from fraudstream.ui import auth, dashboard

from .helpers import cli, free_port, free_ports, read_topic

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
#: When the test alerts' payments happened: one fixed day, so the trail's partitions are known.
PAYMENT_DAY = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


# --- alerts and topics ------------------------------------------------------------------


def make_alert(n: int, card_id: str = "card_7f3a9c", **overrides) -> dict:
    """An alert as the score job writes it: reasons from the job's own describer."""
    transaction_id = f"tx_{n:06d}_{uuid.uuid4().hex[:6]}"
    event_time = PAYMENT_DAY + timedelta(minutes=n)
    alert = {
        "alert_id": reasons.alert_id(transaction_id, "fraudstream", "7"),
        "transaction_id": transaction_id,
        "card_id": card_id,
        "event_time": event_time,
        "scored_time": event_time + timedelta(seconds=2),
        "score": 0.93,
        "threshold": 0.5,
        "model_name": "fraudstream",
        "model_version": "7",
        "reasons": [
            f"{reasons.describe('speed_kmh_from_prev', 5840.0)} (+0.41)",
            f"{reasons.describe('amount_to_card_mean', 8.2)} (+0.17)",
            f"{reasons.describe('country_changed', 1.0)} (+0.06)",
        ],
        "amount": 1234.5,
        "currency": "EUR",
        "merchant_id": "m_electro_042",
        "merchant_category": "electronics",
        "lat": 40.7128,
        "lon": -74.006,
        "country": "US",
        "schema_version": schemas.ALERT_SCHEMA_VERSION,
        "decision": "review",
    }
    alert.update(overrides)
    return alert


def publish(servers: str, topic: str, alerts: list, raw: list[bytes] = ()) -> None:
    """Send alerts (keyed by card, Kafka timestamps 1 ms apart, in list order), then raw values."""
    producer = clients.producer(servers)
    stamp = int(time.time() * 1000)
    for i, alert in enumerate(alerts):
        producer.send(
            topic,
            key=alert["card_id"].encode(),
            value=schemas.encode_alert(alert),
            timestamp_ms=stamp + i,
        )
    for value in raw:
        producer.send(topic, key=b"card_7f3a9c", value=value)
    producer.flush()
    producer.close()


def settings_for(servers, topics, lake: Path, **overrides) -> dashboard.Settings:
    lake.mkdir(parents=True, exist_ok=True)
    values = {
        "bootstrap_servers": servers,
        "alerts_topic": topics["alerts"],
        "labels_topic": topics["labels"],
        "lake": lake,
        "group": f"test-dashboard-{uuid.uuid4().hex[:8]}",
        "port": free_port(),
    }
    values.update(overrides)
    return dashboard.Settings(**values)


@contextmanager
def running(settings: dashboard.Settings):
    """The dashboard, in this process: its Kafka reader and its web server in threads."""
    board = dashboard.Dashboard(settings)
    board.start()
    web = dashboard.server(board)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started and board.reader.ready.wait(20), "the dashboard did not start"
    try:
        yield board
    finally:
        board.hub.publish(None)
        web.should_exit = True
        thread.join(10)
        board.stop()


def url(settings: dashboard.Settings, path: str = "/") -> str:
    return f"http://{settings.host}:{settings.port}{path}"


def get_json(address: str) -> dict:
    with urllib.request.urlopen(address, timeout=10) as response:
        return json.loads(response.read())


def test_alert_window_keeps_the_newest_and_drops_late_repeats():
    from fraudstream.ui.alert_feed import AlertWindow, parse_alert

    window = AlertWindow(capacity=3)
    alerts = [parse_alert(schemas.encode_alert(make_alert(n))) for n in range(5)]
    # Arrival (Kafka timestamp) order, not publication order, decides what is newest.
    for n in (0, 1, 4, 2, 3):
        window.add(alerts[n], timestamp_ms=1000 + n, partition=0, offset=n)
    assert [a["alert_id"] for a in window.newest(10)] == [alerts[n]["alert_id"] for n in (4, 3, 2)]
    # A repeat of an alert that already left the window is still a repeat.
    assert window.add(alerts[0], timestamp_ms=2000, partition=1, offset=9) is None
    assert window.stats(now_ms=2000)["duplicates"] == 1
    assert len(window) == 3


def test_alert_window_counts_decisions_and_rule_hits_by_the_payments_day():
    from fraudstream.ui.alert_feed import AlertWindow, parse_alert

    window = AlertWindow(capacity=3)
    today = PAYMENT_DAY
    sent = [
        make_alert(0, decision="decline", rules_fired=["night@1"]),
        # Two versions of one rule in one alert: one hit.
        make_alert(1, decision="decline", rules_fired=["big@1", "big@2"]),
        make_alert(2, event_time=today - timedelta(days=1), rules_fired=["big@1"]),
        make_alert(3),
    ]
    for n, alert in enumerate(sent):
        window.add(parse_alert(schemas.encode_alert(alert)), 1000 + n, partition=0, offset=n)
    # The first alert has left the window: its hits and decision with it.
    assert window.rule_hits("2026-03-14") == {"big": 1}
    assert window.rule_hits("2026-03-13") == {"big": 1}
    stats = window.stats(now_ms=int(today.timestamp() * 1000))
    assert stats["today"] == "2026-03-14"
    assert stats["decisions_today"] == {"review": 1, "decline": 1}
    assert stats["decisions"] == {"review": 2, "decline": 1}


def test_parse_alert_says_why_a_record_is_not_an_alert():
    from fraudstream.ui.alert_feed import MalformedAlertError, parse_alert

    good = json.loads(schemas.encode_alert(make_alert(1)))
    assert parse_alert(json.dumps(good).encode())["event_time"] == "2026-03-14T09:01:00.000Z"
    declined = json.dumps({**good, "decision": "decline"}).encode()
    assert parse_alert(declined)["decision"] == "decline"
    # A version 1 alert has no decision: it was a review.
    old = {k: v for k, v in good.items() if k != "decision"} | {"schema_version": 1}
    assert parse_alert(json.dumps(old).encode())["decision"] == "review"
    cases = {
        json.dumps({**good, "decision": "block"}).encode(): (
            "decision 'block' is not review or decline"
        ),
        b"\xff": "not UTF-8 JSON",
        b"[]": "not a JSON object",
        json.dumps({**good, "card_id": None}).encode(): "missing or non-text card_id",
        json.dumps({**good, "score": "high"}).encode(): "missing or non-numeric score",
        json.dumps({**good, "reasons": "fast"}).encode(): "reasons is not a list of text",
        json.dumps({**good, "event_time": "yesterday"}).encode(): (
            "event_time is not an ISO-8601 timestamp"
        ),
    }
    for value, reason in cases.items():
        with pytest.raises(MalformedAlertError) as raised:
            parse_alert(value)
        assert str(raised.value) == reason


# --- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    yield context.new_page()
    context.close()


def open_live(page, settings):
    from playwright.sync_api import expect

    page.goto(url(settings))
    expect(page.locator("#connection")).to_have_text("live", timeout=10_000)


def rows(page):
    return page.locator("#alerts tbody tr")


# --- the page -------------------------------------------------------------------------------


def test_dashboard_shows_new_alerts_newest_first_within_two_seconds(
    kafka_bootstrap, topics, tmp_path, page
):
    from playwright.sync_api import expect

    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    with running(settings):
        open_live(page, settings)
        alerts = [
            make_alert(1, card_id="card_11aa"),
            make_alert(2, card_id="card_22bb", merchant_category="travel", amount=89.9),
            make_alert(3, card_id="card_33cc", model_version="8", score=0.71),
        ]
        started = time.monotonic()
        publish(kafka_bootstrap, topics["alerts"], alerts)
        expect(rows(page)).to_have_count(3, timeout=2000)
        print(f"alerts on the page {time.monotonic() - started:.2f} s after publishing")

        newest = rows(page).nth(0)
        expect(newest).to_have_attribute("data-alert-id", alerts[2]["alert_id"])
        expect(newest).to_contain_text("2026-03-14 09:03:00")
        expect(newest).to_contain_text("card_33cc")
        expect(newest).to_contain_text("1,234.50 EUR")
        expect(newest).to_contain_text("m_electro_042")
        expect(newest).to_contain_text("electronics")
        expect(newest).to_contain_text("0.71")
        expect(newest).to_contain_text("fraudstream v8")
        expect(newest).to_contain_text("5,840 km/h travel from the card's previous card-present")
        expect(rows(page).nth(2)).to_have_attribute("data-alert-id", alerts[0]["alert_id"])

        expect(page.locator("#per-minute-now")).to_have_text("3")
        expect(page.locator("#by-category")).to_contain_text("electronics2")
        expect(page.locator("#by-category")).to_contain_text("travel1")
        expect(page.locator("#by-model-version")).to_contain_text("fraudstream v72")
        expect(page.locator("#by-model-version")).to_contain_text("fraudstream v81")


def test_dashboard_shows_a_repeated_alert_once(kafka_bootstrap, topics, tmp_path, page):
    from playwright.sync_api import expect

    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    with running(settings):
        open_live(page, settings)
        repeated = make_alert(1)
        # Once more on the same partition, once under another key (another partition).
        moved = {**repeated, "card_id": "card_other"}
        publish(kafka_bootstrap, topics["alerts"], [repeated, repeated, moved])
        last = make_alert(2)
        publish(kafka_bootstrap, topics["alerts"], [last])
        expect(page.locator(f'tr[data-alert-id="{last["alert_id"]}"]')).to_have_count(1)
        expect(page.locator(f'tr[data-alert-id="{repeated["alert_id"]}"]')).to_have_count(1)
        expect(rows(page)).to_have_count(2)
        expect(page.locator("#duplicates")).to_have_text("2")

        # The page drops repeats too: one can come in both the snapshot a (re)connecting
        # page gets and the push that follows it.
        shown = get_json(url(settings, "/api/alerts"))["alerts"][0]
        page.evaluate("(alert) => addAlerts([alert, alert], true)", shown)
        expect(rows(page)).to_have_count(2)


def write_card_locations(lake: Path, rows_: list[dict]) -> None:
    """A card_locations view in the score job's layout: LAKE/card_locations/date=D/batch-N."""
    table = pa.Table.from_pylist(rows_, schema=schemas.CARD_LOCATION_ARROW_SCHEMA)
    folder = lake / "card_locations" / f"date={PAYMENT_DAY.date().isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "batch-000000000001.parquet")


def location(card, minutes, lat, lon, country, channel="pos", km=0.0, speed=0.0):
    return {
        "card_id": card,
        "event_time": PAYMENT_DAY + timedelta(minutes=minutes),
        "transaction_id": f"tx_loc_{card}_{minutes}",
        "lat": lat,
        "lon": lon,
        "country": country,
        "merchant_id": f"m_{country.lower()}_{minutes}",
        "channel": channel,
        "card_present": channel in ("pos", "atm"),
        "km_from_previous": km,
        "seconds_from_previous": 0.0,
        "speed_kmh": speed,
    }


def test_alert_detail_draws_the_card_trail_with_the_impossible_leg_highlighted(
    kafka_bootstrap, topics, tmp_path, page
):
    from playwright.sync_api import expect

    lake = tmp_path / "lake"
    card = "card_trail01"
    write_card_locations(
        lake,
        [
            location(card, -300, 48.8566, 2.3522, "FR"),
            location(card, -200, 48.8606, 2.3376, "FR", km=1.2, speed=0.7),
            location(card, -150, 51.5072, -0.1276, "GB", channel="ecom"),
            # Paris to New York in 30 minutes: 5,840 km at 11,680 km/h.
            location(card, 0, 40.7128, -74.006, "US", km=5840.0, speed=11680.0),
            # After the alert: not part of its story.
            location(card, 60, 35.6762, 139.6503, "JP", km=10850.0, speed=10850.0),
            location("card_someone_else", -100, -33.8688, 151.2093, "AU"),
        ],
    )
    settings = settings_for(kafka_bootstrap, topics, lake)
    alert = make_alert(0, card_id=card)
    with running(settings):
        open_live(page, settings)
        publish(kafka_bootstrap, topics["alerts"], [make_alert(5, card_id="card_x"), alert])
        expect(rows(page)).to_have_count(2, timeout=2000)
        page.locator(f'tr[data-alert-id="{alert["alert_id"]}"]').click()

        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("#d-reasons li")).to_have_count(3)
        expect(page.locator("#trail circle.point")).to_have_count(4)
        expect(page.locator("#trail circle.point.alerted")).to_have_count(1)
        expect(page.locator("#trail line.leg")).to_have_count(2)
        expect(page.locator("#trail line.leg.impossible")).to_have_count(1)
        expect(page.locator("#trail text.speed")).to_have_text("11,680 km/h")
        expect(page.locator("#trail-table tbody tr")).to_have_count(4)
        expect(page.locator("#trail-table tbody tr.impossible")).to_have_count(1)
        expect(page.locator("#trail-table tbody tr.impossible")).to_contain_text("US")
        expect(page.locator("#trail-note")).to_have_text("4 locations, 1 impossible leg.")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), animations="disabled")


def test_verdict_click_publishes_an_analyst_label_event(kafka_bootstrap, topics, tmp_path, page):
    from playwright.sync_api import expect

    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    alert = make_alert(1, card_id="card_verdict9")
    with running(settings):
        open_live(page, settings)
        publish(kafka_bootstrap, topics["alerts"], [alert])
        row = page.locator(f'tr[data-alert-id="{alert["alert_id"]}"]')
        row.click()
        page.locator("#mark-fraud").click()
        expect(page.locator("#verdict-status")).to_have_text("Sent: fraud.")
        expect(row).to_have_attribute("data-verdict", "fraud")
        expect(page.locator("#mark-fraud")).to_have_attribute("aria-pressed", "true")

    records = read_topic(kafka_bootstrap, topics["labels"])
    assert len(records) == 1
    assert records[0].key == b"card_verdict9"
    # Who gave it: on a dashboard without logins, this machine's one user.
    assert records[0].headers == [("author", b"local")]
    label = json.loads(records[0].value)
    assert schemas.label_invalid_reason(label) is None
    reported = schemas.parse_time(label.pop("reported_time"))
    assert abs((datetime.now(UTC) - reported).total_seconds()) < 60
    assert label == {
        "transaction_id": alert["transaction_id"],
        "card_id": "card_verdict9",
        "label": "fraud",
        "source": "analyst",
        "scenario": None,
        "schema_version": 1,
    }


def test_malformed_records_are_skipped_and_counted(kafka_bootstrap, topics, tmp_path, page):
    from playwright.sync_api import expect

    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    without_score = json.loads(schemas.encode_alert(make_alert(9)))
    del without_score["score"]
    with running(settings):
        open_live(page, settings)
        publish(
            kafka_bootstrap,
            topics["alerts"],
            [],
            raw=[b"\xff\xfe not json", json.dumps(without_score).encode(), b"[1, 2]"],
        )
        good = make_alert(1)
        publish(kafka_bootstrap, topics["alerts"], [good])
        expect(page.locator(f'tr[data-alert-id="{good["alert_id"]}"]')).to_have_count(1)
        expect(page.locator("#malformed")).to_have_text("3")
        expect(rows(page)).to_have_count(1)
        stats = get_json(url(settings, "/api/stats"))
        assert stats["malformed"] == 3


def test_page_with_ten_thousand_alerts_shows_the_newest_and_pages_back(
    kafka_bootstrap, topics, tmp_path, page
):
    from playwright.sync_api import expect

    alerts = [make_alert(n, card_id=f"card_{n % 97:04d}") for n in range(10_000)]
    publish(kafka_bootstrap, topics["alerts"], alerts)
    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    started = time.monotonic()
    with running(settings) as board:
        # The window refills the newest alerts of each partition, bounded.
        deadline = time.monotonic() + 20
        while len(board.window) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(board.window) == 1500
        refilled = time.monotonic()
        page.goto(url(settings))
        expect(rows(page)).to_have_count(100, timeout=5000)
        rendered = time.monotonic()
        print(
            f"10,000 alerts in the topic: window refilled in {refilled - started:.2f} s, "
            f"first 100 rows rendered {rendered - refilled:.2f} s after page load started"
        )
        assert rendered - refilled < 2.0
        expect(rows(page).nth(0)).to_have_attribute("data-alert-id", alerts[-1]["alert_id"])
        expect(rows(page).nth(99)).to_have_attribute("data-alert-id", alerts[-100]["alert_id"])

        page.locator("#older").click()
        expect(rows(page)).to_have_count(200)
        expect(rows(page).nth(100)).to_have_attribute("data-alert-id", alerts[-101]["alert_id"])

        newest = get_json(url(settings, "/api/alerts?limit=100"))["alerts"]
        older = get_json(url(settings, f"/api/alerts?limit=100&before={newest[-1]['cursor']}"))
        ids = [a["alert_id"] for a in newest + older["alerts"]]
        assert ids == [a["alert_id"] for a in reversed(alerts[-200:])]
        assert older["more"] is True


# --- the rules page and decisions -----------------------------------------------------------


class Client:
    """A browser's side of the API: a cookie jar, and the session's CSRF token on changes."""

    def __init__(self, settings: dashboard.Settings, context=None):
        scheme = "https" if settings.tls_cert else "http"
        self.base = f"{scheme}://{settings.host}:{settings.port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            urllib.request.HTTPSHandler(context=context),
            NoRedirect(),
        )
        self.csrf: str | None = None

    def call(self, method: str, path: str, body=None, csrf=True) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            text = error.read()
            return error.code, json.loads(text) if text.startswith(b"{") else {}

    def me(self) -> tuple[int, dict]:
        """Who this client is; keeps the session's CSRF token for the changes after it."""
        status, body = self.call("GET", "/api/me")
        self.csrf = body.get("csrf")
        return status, body

    def login(self, user: str, password: str) -> tuple[int, dict]:
        answer = self.call("POST", "/api/login", {"user": user, "password": password})
        if answer[0] == 200:
            self.me()
        return answer


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Keep a redirect as the answer, to see where it points."""

    def redirect_request(self, *args, **kwargs):
        return None


def post_json(settings: dashboard.Settings, path: str, body: dict) -> tuple[int, dict]:
    """POST as the dashboard's page does, in a session of its own."""
    client = Client(settings)
    client.me()
    return client.call("POST", path, body)


def test_rules_page_shows_hits_today_disables_and_enables_a_rule_and_counts_decisions(
    kafka_bootstrap, topics, tmp_path, page
):
    from playwright.sync_api import expect

    big = rules.new_rule(
        "big-cnp", "amount > 2000 AND is_ecom = 1", "decline", "alice", "Large CNP"
    )
    night = rules.new_rule("night-atm", "channel = 'atm' AND amount > 500", "review", "bob")
    for rule in (big, night):
        rules.publish(kafka_bootstrap, topics["rules"], rule)
    now = datetime.now(UTC).replace(microsecond=0)
    alerts = [
        make_alert(1, event_time=now, decision="decline", rules_fired=["big-cnp@1"]),
        # Another version of the same rule is the same rule.
        make_alert(2, event_time=now, decision="decline", rules_fired=["big-cnp@7"]),
        # Yesterday's payment: a hit, but not today's.
        make_alert(3, event_time=now - timedelta(days=1), decision="decline",
                   rules_fired=["big-cnp@1"]),
        make_alert(4, event_time=now),
    ]  # fmt: skip
    publish(kafka_bootstrap, topics["alerts"], alerts)
    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake", rules_topic=topics["rules"])
    with running(settings) as board:
        deadline = time.monotonic() + 20
        while len(board.window) < len(alerts) and time.monotonic() < deadline:
            time.sleep(0.05)
        open_live(page, settings)
        expect(page.locator("#decisions-today-decline")).to_have_text("2")
        expect(page.locator("#decisions-today-review")).to_have_text("1")
        expect(page.locator("#decisions-window-decline")).to_have_text("3")
        expect(page.locator("#decisions-window-review")).to_have_text("1")

        page.locator("#to-rules").click()
        expect(page.locator("#rules tbody tr")).to_have_count(2)
        row = page.locator('#rules tr[data-rule-id="big-cnp"]')
        expect(row.locator("td.hits")).to_have_text("2")
        expect(row.locator("td.version")).to_have_text("v1")
        expect(row).to_contain_text("amount > 2000 AND is_ecom = 1")
        expect(page.locator('#rules tr[data-rule-id="night-atm"] td.hits')).to_have_text("0")
        expect(page.locator(".page")).to_contain_text("allow rules show no hits here")

        row.locator("button").click()
        expect(page.locator("#rules-status")).to_have_text("Published big-cnp v2, disabled.")
        expect(row).to_have_attribute("data-enabled", "false")
        expect(row.locator("button")).to_have_text("Enable")
        expect(row.locator("td.version")).to_have_text("v2")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "rules.png"), animations="disabled")

        # Enabling checks the condition with Spark first (a local session the service
        # starts on the first enable), then publishes the next version.
        row.locator("button").click()
        expect(page.locator("#rules-status")).to_have_text(
            "Published big-cnp v3, enabled.", timeout=120_000
        )
        expect(row).to_have_attribute("data-enabled", "true")

        status, body = post_json(settings, "/api/rules/nope/enabled", {"enabled": False})
        assert (status, body) == (404, {"error": f"No rule nope on {topics['rules']}."})

    found = rules.read_rules(kafka_bootstrap, topics["rules"])
    assert found.rules["night-atm"] == night
    enabled = found.rules["big-cnp"]
    assert (enabled.version, enabled.enabled, enabled.author) == (3, True, "local")
    assert (enabled.condition, enabled.action, enabled.description) == (
        big.condition,
        big.action,
        big.description,
    )


# --- who may do what ------------------------------------------------------------------------


def test_users_file_keeps_roles_and_hashes_never_passwords(tmp_path):
    store = auth.UserStore(tmp_path / "dashboard" / "users.json")
    assert store.add("ana", "analyst", "s3cret-pass") is True
    assert store.add("sam", "admin", None) is True
    assert store.add("ana", "viewer", "other-pass") is False  # replaced
    text = store.path.read_text()
    assert "s3cret-pass" not in text and "other-pass" not in text
    assert store.path.stat().st_mode & 0o777 == 0o600
    ana = store.get("ana")
    assert (ana.role, auth.verify_password("other-pass", ana.password_hash)) == ("viewer", True)
    assert auth.verify_password("s3cret-pass", ana.password_hash) is False
    assert store.get("sam") == auth.User("sam", "admin", None)
    # The same password hashes differently each time (a salt of its own).
    assert auth.hash_password("x") != auth.hash_password("x")
    with pytest.raises(auth.AuthError, match=r"^The role must be one of viewer, analyst, admin"):
        store.add("bob", "root", "pw")
    with pytest.raises(auth.AuthError, match=r"^A user name is 1 to 64 letters"):
        store.add("bob smith", "viewer", "pw")
    store.remove("sam")
    with pytest.raises(auth.AuthError, match=r"^No user sam in "):
        store.remove("sam")
    assert set(store.users()) == {"ana"}


def test_failed_logins_lock_the_name_for_the_window():
    throttle = auth.Throttle(max_failures=3, window_s=60)
    for _ in range(2):
        throttle.failed("ana")
    assert throttle.locked_for("ana") == 0
    throttle.failed("ana")
    assert 59 < throttle.locked_for("ana") <= 60
    assert throttle.locked_for("bob") == 0
    throttle.succeeded("ana")
    assert throttle.locked_for("ana") == 0


@pytest.fixture
def users(tmp_path) -> Path:
    store = auth.UserStore(tmp_path / "users.json")
    store.add("vera", "viewer", "vera-pass")
    store.add("ana", "analyst", "ana-pass")
    store.add("adam", "admin", "adam-pass")
    store.add("pat", "analyst", None)  # through the proxy only
    return store.path


def test_logins_roles_and_csrf_decide_who_may_give_verdicts_and_change_rules(
    kafka_bootstrap, topics, tmp_path, users
):
    rule = rules.new_rule("big", "amount > 2000", "review", "alice")
    rules.publish(kafka_bootstrap, topics["rules"], rule)
    alert = make_alert(1, card_id="card_auth1")
    publish(kafka_bootstrap, topics["alerts"], [alert])
    settings = settings_for(
        kafka_bootstrap,
        topics,
        tmp_path / "lake",
        rules_topic=topics["rules"],
        access=auth.Access(mode="password", users_file=users),
    )
    verdict = f"/api/alerts/{alert['alert_id']}/verdict"
    disable = "/api/rules/big/enabled"
    with running(settings) as board:
        deadline = time.monotonic() + 20
        while len(board.window) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        nobody = Client(settings)
        assert nobody.call("GET", "/api/alerts")[0] == 401
        status, _ = nobody.call("GET", "/")
        assert status == 303  # to the login page
        # A forged request without a session changes nothing.
        assert nobody.call("POST", verdict, {"label": "fraud"}) == (401, {"error": "Log in first."})

        wrong = Client(settings)
        assert wrong.login("ana", "not-it") == (401, {"error": "Wrong user name or password."})
        assert wrong.login("nobody", "x") == (401, {"error": "Wrong user name or password."})
        # Proxy-only users have no password to guess.
        assert wrong.login("pat", "") == (401, {"error": "Wrong user name or password."})

        vera = Client(settings)
        assert vera.login("vera", "vera-pass")[0] == 200
        assert vera.me() == (
            200,
            {"user": "vera", "role": "viewer", "csrf": vera.csrf, "auth": "password"},
        )
        assert vera.call("GET", "/api/alerts")[0] == 200
        assert vera.call("POST", verdict, {"label": "fraud"}) == (
            403,
            {"error": "vera is a viewer; this needs an analyst."},
        )
        assert vera.call("POST", disable, {"enabled": False}) == (
            403,
            {"error": "vera is a viewer; this needs an admin."},
        )

        ana = Client(settings)
        assert ana.login("ana", "ana-pass") == (200, {"user": "ana", "role": "analyst"})
        # The session's cookie alone, as a page of another site would send it: refused.
        status, body = ana.call("POST", verdict, {"label": "fraud"}, csrf=False)
        assert (status, body["reason"]) == (403, "csrf")
        # Another session's token is no better.
        ana.csrf, real = vera.csrf, ana.csrf
        assert ana.call("POST", verdict, {"label": "fraud"})[0] == 403
        ana.csrf = real
        assert ana.call("POST", disable, {"enabled": False})[0] == 403
        assert ana.call("POST", verdict, {"label": "fraud"})[0] == 200

        adam = Client(settings)
        adam.login("adam", "adam-pass")
        assert adam.call("POST", disable, {"enabled": False}) == (
            200,
            {"rule_id": "big", "version": 2, "enabled": False, "changed": True},
        )
        assert adam.call("POST", "/api/logout", {}) == (200, {"logged_out": "adam"})
        assert adam.call("GET", "/api/alerts")[0] == 401

        # A role changed in the file counts from the next request.
        auth.UserStore(users).add("vera", "analyst", "vera-pass")
        assert vera.call("POST", verdict, {"label": "genuine"})[0] == 200

        # Five wrong passwords lock the name, even against the right one.
        for _ in range(auth.MAX_FAILURES):
            wrong.login("adam", "guess")
        status, body = wrong.login("adam", "adam-pass")
        assert (status, body) == (
            429,
            {"error": "Too many failed logins for adam; try again in 5 min."},
        )

    labels = read_topic(kafka_bootstrap, topics["labels"])
    assert sorted((r.headers[0][1], json.loads(r.value)["label"]) for r in labels) == [
        (b"ana", "fraud"),
        (b"vera", "genuine"),
    ]
    found = rules.read_rules(kafka_bootstrap, topics["rules"]).rules["big"]
    assert (found.version, found.enabled, found.author) == (2, False, "adam")


def test_proxy_names_the_user_only_from_a_trusted_address(kafka_bootstrap, topics, tmp_path, users):
    def settings(trusted):
        return settings_for(
            kafka_bootstrap,
            topics,
            tmp_path / "lake",
            access=auth.Access(mode="proxy", users_file=users, trusted_proxies=trusted),
        )

    def as_user(client, name):
        client.opener.addheaders = [("X-Forwarded-User", name)]
        return client

    trusted = settings(("127.0.0.0/8",))
    with running(trusted):
        pat = as_user(Client(trusted), "pat")
        assert pat.me()[1] | {"csrf": None} == {
            "user": "pat",
            "role": "analyst",
            "csrf": None,
            "auth": "proxy",
        }
        # Anyone the proxy names and the file does not list may look, not act.
        assert as_user(Client(trusted), "zoe").me()[1]["role"] == "viewer"
        assert Client(trusted).call("GET", "/api/alerts")[0] == 401  # no header
        # No login of the dashboard's own behind a proxy.
        assert Client(trusted).login("ana", "ana-pass")[0] == 404
        # The proxy's user needs the session's token to change anything, too.
        verdict = "/api/alerts/nope/verdict"
        assert pat.call("POST", verdict, {"label": "fraud"}, csrf=False)[0] == 403
        assert pat.call("POST", verdict, {"label": "fraud"})[0] == 404  # past the door
    elsewhere = settings(("10.0.0.0/8",))
    with running(elsewhere):
        # The header from an address that is not the proxy's names nobody.
        assert as_user(Client(elsewhere), "adam").call("GET", "/api/alerts")[0] == 401


def test_login_in_the_browser_shows_each_role_what_it_may_do(
    kafka_bootstrap, topics, tmp_path, users, page
):
    from playwright.sync_api import expect

    settings = settings_for(
        kafka_bootstrap,
        topics,
        tmp_path / "lake",
        access=auth.Access(mode="password", users_file=users),
    )
    alert = make_alert(1, card_id="card_auth2")
    publish(kafka_bootstrap, topics["alerts"], [alert])
    with running(settings):
        page.goto(url(settings))
        expect(page).to_have_url(url(settings, "/login?next=%2F"))
        page.fill("#user", "ana")
        page.fill("#password", "wrong")
        page.click("button[type=submit]")
        expect(page.locator("#login-status")).to_have_text("Wrong user name or password.")
        page.fill("#password", "ana-pass")
        page.click("button[type=submit]")
        expect(page).to_have_url(url(settings))
        expect(page.locator("#who")).to_have_text("ana · analyst")
        row = page.locator(f'tr[data-alert-id="{alert["alert_id"]}"]')
        row.click()
        expect(page.locator("#mark-fraud")).to_be_visible()
        page.locator("#mark-fraud").click()
        expect(page.locator("#verdict-status")).to_have_text("Sent: fraud.")

        page.click("#logout")
        expect(page).to_have_url(url(settings, "/login?next=%2F"))
        page.fill("#user", "vera")
        page.fill("#password", "vera-pass")
        page.click("button[type=submit]")
        expect(page.locator("#who")).to_have_text("vera · viewer")
        page.locator(f'tr[data-alert-id="{alert["alert_id"]}"]').click()
        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("#mark-fraud")).to_be_hidden()
    labels = read_topic(kafka_bootstrap, topics["labels"])
    assert [(r.headers, json.loads(r.value)["label"]) for r in labels] == [
        ([("author", b"ana")], "fraud")
    ]


def test_dashboard_serves_https_with_secure_cookies(kafka_bootstrap, topics, tmp_path):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    settings = settings_for(
        kafka_bootstrap,
        topics,
        tmp_path / "lake",
        tls_cert=cert,
        tls_key=key,
        access=auth.Access(mode="none", secure_cookies=True),
    )
    with running(settings):
        client = Client(settings, context=ssl.create_default_context(cafile=str(cert)))
        assert client.me()[1]["user"] == "local"
        (cookie,) = list(client.jar)
        assert (cookie.name, cookie.secure) == (auth.SESSION_COOKIE, True)
        assert cookie.has_nonstandard_attr("HttpOnly")
        # Plain HTTP is not served: the TLS server drops it.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url(settings, "/api/me"), timeout=10)


def test_users_command_and_unsafe_dashboard_setups(tmp_path, capsys):
    def run(*args: str, stdin: str | None = None):
        return cli(capsys, *args, stdin=stdin)

    users = tmp_path / "users.json"
    added = run("users", "add", "ana", "--role", "analyst", "--file", str(users), stdin="pw-1\n")
    assert added.stdout == f"Added ana (analyst, with a password) in {users}.\n"
    run("users", "add", "pat", "--role", "admin", "--no-password", "--file", str(users))
    assert run("users", "list", "--file", str(users)).stdout == (
        "ana  analyst  (password)\npat  admin  (proxy only)\n"
    )
    assert auth.verify_password("pw-1", auth.UserStore(users).get("ana").password_hash)
    gone = run("users", "remove", "bob", "--file", str(users))
    assert (gone.returncode, gone.stderr) == (2, f"fraudstream: No user bob in {users}.\n")

    def dashboard_says(*args: str) -> str:
        result = run("dashboard", "--lake", str(tmp_path), *args)
        assert result.returncode == 2
        return result.stderr.strip()

    empty = tmp_path / "none.json"
    assert dashboard_says("--users", str(empty)) == (
        f"fraudstream: No dashboard users with a password in {empty}: add one with "
        "'fraudstream users add NAME --role admin', or serve this machine alone without "
        "logins with --auth none."
    )
    assert dashboard_says("--auth", "none", "--host", "0.0.0.0") == (
        "fraudstream: --auth none serves this machine alone; to listen on 0.0.0.0 use "
        "--auth password or --auth proxy."
    )
    assert dashboard_says("--users", str(users), "--host", "0.0.0.0") == (
        "fraudstream: Serving on 0.0.0.0 sends logins and cookies over the network: give "
        "--tls-cert and --tls-key, or --plain-http behind a proxy that serves TLS."
    )
    assert dashboard_says("--users", str(users), "--tls-cert", str(users)) == (
        "fraudstream: Give both --tls-cert and --tls-key, or neither."
    )


# --- the service, as a user runs it -----------------------------------------------------


def fraudstream(*args: str, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fraudstream.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def wait_for_window(settings, size: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    stats = {}
    while time.monotonic() < deadline:
        try:
            stats = get_json(url(settings, "/api/stats"))
            if stats["in_window"] >= size:
                return stats
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the window did not reach {size} alerts: {stats}")


def stop(process) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, err
    return out, err


def committed_offsets(servers: str, group: str, topic: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        consumer.close()


def test_service_restart_resumes_from_committed_offsets_and_refills_the_page(
    kafka_bootstrap, topics, tmp_path, page
):
    from playwright.sync_api import expect

    settings = settings_for(kafka_bootstrap, topics, tmp_path / "lake")
    command = [
        "dashboard",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topics["alerts"],
        "--labels-topic",
        topics["labels"],
        "--lake",
        str(settings.lake),
        "--group",
        settings.group,
        "--port",
        str(settings.port),
        # Read back one alert per partition at start: what the page shows after a restart
        # beyond that can only come from the committed offsets.
        "--refill",
        "1",
        "--auth",
        "none",
    ]
    card = "card_restart1"  # one card: one partition
    first = [make_alert(n, card_id=card) for n in range(4)]
    publish(kafka_bootstrap, topics["alerts"], first)
    service = fraudstream(*command)
    try:
        wait_for_window(settings, 1)
        open_live(page, settings)
        expect(rows(page)).to_have_count(1)
    finally:
        out, _ = stop(service)
    assert f"Dashboard on http://127.0.0.1:{settings.port}/" in out
    partition = read_topic(kafka_bootstrap, topics["alerts"])[0].partition
    assert committed_offsets(kafka_bootstrap, settings.group, topics["alerts"])[partition] == 4

    # While the service is down, two alerts arrive; the open page waits and reconnects.
    expect(page.locator("#connection")).to_have_text("reconnecting…", timeout=10_000)
    missed = [make_alert(n, card_id=card) for n in range(4, 6)]
    publish(kafka_bootstrap, topics["alerts"], missed)
    service = fraudstream(*command)
    try:
        wait_for_window(settings, 2)
        expect(page.locator("#connection")).to_have_text("live", timeout=15_000)
        expect(rows(page)).to_have_count(2)
        expect(rows(page).nth(0)).to_have_attribute("data-alert-id", missed[1]["alert_id"])
        expect(rows(page).nth(1)).to_have_attribute("data-alert-id", missed[0]["alert_id"])
    finally:
        stop(service)
    assert committed_offsets(kafka_bootstrap, settings.group, topics["alerts"])[partition] == 6

    # Nothing new: a restarted service still shows the newest alert, not an empty page.
    service = fraudstream(*command)
    try:
        wait_for_window(settings, 1)
        page.reload()
        expect(rows(page)).to_have_count(1)
        expect(rows(page).nth(0)).to_have_attribute("data-alert-id", missed[1]["alert_id"])
    finally:
        stop(service)


@pytest.mark.kafka  # a broker of its own, started here
def test_dashboard_outlives_a_broker_restart(tmp_path, page):
    from playwright.sync_api import expect

    # A broker of this test's own: the shared one must never be stopped.
    ports = free_ports(2)
    broker = local_broker.LocalBroker(
        home=tmp_path / "kafka", port=ports[0], controller_port=ports[1]
    )
    local_broker.start(broker)
    try:
        servers = broker.bootstrap_servers
        topics = {"alerts": "fraud-alerts", "labels": "fraud-labels"}
        local_broker.create_topics(servers, {t: {} for t in topics.values()}, partitions=3)
        settings = settings_for(servers, topics, tmp_path / "lake")
        before, after = make_alert(1, card_id="card_before"), make_alert(2, card_id="card_after")
        with running(settings):
            open_live(page, settings)
            publish(servers, topics["alerts"], [before])
            expect(rows(page)).to_have_count(1, timeout=5000)
            rows(page).nth(0).click()
            page.locator("#mark-fraud").click()
            expect(page.locator("#verdict-status")).to_have_text("Sent: fraud.")

            local_broker.stop(broker)
            # The page keeps what it has; a verdict now says it was not sent, and is not
            # delivered behind the analyst's back once the broker is back.
            page.locator("#mark-genuine").click()
            expect(page.locator("#verdict-status")).to_contain_text("Not sent:", timeout=20_000)
            expect(rows(page)).to_have_count(1)

            local_broker.start(broker)
            publish(servers, topics["alerts"], [after])
            expect(rows(page)).to_have_count(2, timeout=30_000)
            expect(rows(page).nth(0)).to_have_attribute("data-alert-id", after["alert_id"])
            rows(page).nth(0).click()
            page.locator("#mark-fraud").click()
            expect(page.locator("#verdict-status")).to_have_text("Sent: fraud.", timeout=20_000)
        labels = [json.loads(r.value) for r in read_topic(servers, topics["labels"])]
        assert sorted((x["card_id"], x["label"]) for x in labels) == [
            ("card_after", "fraud"),
            ("card_before", "fraud"),
        ]
    finally:
        local_broker.stop(broker)


def test_dashboard_wrong_setup_fails_with_one_sentence(tmp_path):
    def dashboard_command(*args: str) -> list[str]:
        return [sys.executable, "-m", "fraudstream.cli", "dashboard", *args]

    # Nothing listens at the broker's address: the pre-flight check is refused at once.
    # It runs while the other two are checked.
    address = f"127.0.0.1:{free_port()}"
    with subprocess.Popen(
        dashboard_command("--lake", str(tmp_path), "--brokers", address, "--auth", "none"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as unreachable:
        missing = subprocess.run(
            dashboard_command("--lake", str(tmp_path / "no")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 2
        assert missing.stderr.strip() == (
            f"fraudstream: No lake folder at {tmp_path / 'no'}: give --lake the output root "
            "of the score job (it reads card locations from LAKE/card_locations)."
        )
        small = subprocess.run(
            dashboard_command("--lake", str(tmp_path), "--window", "5"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert small.returncode == 2
        assert small.stderr.strip() == (
            "fraudstream: --window must be at least 100 and --refill at least 0."
        )
        _, stderr = unreachable.communicate(timeout=120)
    assert unreachable.returncode == 2
    assert stderr.startswith(f"fraudstream: Cannot reach Kafka at {address}")
    assert len(stderr.strip().splitlines()) == 1


# --- alerts tail ----------------------------------------------------------------------------


def test_alerts_tail_prints_each_alert_once_as_a_line_or_json(kafka_bootstrap, topics):
    # One card, so one partition: the order on the topic is the order to print.
    alerts = [make_alert(n, card_id="card_tail", amount=10.0 + n) for n in range(3)]
    publish(kafka_bootstrap, topics["alerts"], [alerts[0], alerts[1], alerts[0], alerts[2]])
    base = ["alerts", "tail", "--brokers", kafka_bootstrap, "--topic", topics["alerts"]]

    lines = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", *base, "--from-beginning", "--max", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout.splitlines() == [
        f"2026-03-14 09:0{n}:00Z  card_tail  {10 + n:.2f} EUR  m_electro_042 (electronics)  "
        "score 0.93 review  5,840 km/h travel from the card's previous card-present payment (+0.41)"
        for n in range(3)
    ]


def test_alerts_tail_json_and_ctrl_c(kafka_bootstrap, topics):
    # All on one partition (the raw record's key is make_alert's card), the bad record
    # first: once both alerts are printed, it has been read and reported.
    alerts = [make_alert(n) for n in range(2)]
    publish(kafka_bootstrap, topics["alerts"], [], raw=[b"oops"])
    publish(kafka_bootstrap, topics["alerts"], alerts)
    tail = fraudstream(
        "alerts",
        "tail",
        "--brokers",
        kafka_bootstrap,
        "--topic",
        topics["alerts"],
        "--from-beginning",
        "--json",
    )
    try:
        received = [json.loads(tail.stdout.readline()) for _ in alerts]
    finally:
        tail.send_signal(signal.SIGINT)
        try:
            out, err = tail.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tail.kill()
            raise
    assert tail.returncode == 0
    assert "Traceback" not in err
    assert out == ""
    assert [r["alert_id"] for r in received] == [a["alert_id"] for a in alerts]
    assert received[0]["event_time"] == "2026-03-14T09:00:00.000Z"
    assert received[0]["reasons"] == alerts[0]["reasons"]
    assert f"skipped {topics['alerts']}/" in err and ": not UTF-8 JSON" in err


def test_card_trail_reads_a_merged_day_once(tmp_path):
    folder = tmp_path / "card_locations" / f"date={PAYMENT_DAY.date().isoformat()}"
    folder.mkdir(parents=True)
    for batch, minutes in enumerate((0, 10, 20, 30)):
        table = pa.Table.from_pylist(
            [location("card_merged", minutes, 48.85, 2.35, "FR")],
            schema=schemas.CARD_LOCATION_ARROW_SCHEMA,
        )
        pq.write_table(table, folder / viewfiles.batch_file(batch))
    merged = viewfiles.compact(
        tmp_path, ("card_locations",), until=date(2100, 1, 1), log=lambda _: None
    )

    assert merged["files"] == 3 and len(list(folder.glob("*.parquet"))) == 5
    trail = dashboard.card_trail(tmp_path, "card_merged")
    assert [point["event_time"][11:16] for point in trail] == ["09:00", "09:10", "09:20", "09:30"]


# --- the models page: champion against shadow challenger --------------------------------


def get_json_status(address: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(address, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_models_page_draws_cp_per_day_and_the_table_of_compare(
    kafka_bootstrap, topics, tmp_path, page, mlflow_store
):
    import shutil

    from playwright.sync_api import expect

    from fraudstream.ml import compare

    from .helpers import THRESHOLD, register_champion_and_challenger, synthetic_view, write_lake

    name = "fraudstream-shadow"
    register_champion_and_challenger(name)
    scored, labels = synthetic_view()
    lake = tmp_path / "lake"
    write_lake(lake, scored, labels)
    # The registered challenger's bands: the toy model's threshold, and no decline band.
    expected = compare.compare(scored, labels, THRESHOLD, None, challenger_version="2")
    settings = settings_for(kafka_bootstrap, topics, lake, model_name=name)
    with running(settings) as board:
        page.goto(url(settings, "/rules"))
        page.locator("#to-models").click()
        expect(page.locator("#comparison")).to_be_visible(timeout=30_000)
        chart = page.locator("#cp-chart")
        expect(chart.locator("polyline.series")).to_have_count(2)
        for model in ("champion", "challenger"):
            metrics = getattr(expected, model)
            line = chart.locator(f"polyline.series.{model}").get_attribute("points")
            assert len(line.split()) == len(expected.days) == 7
            # Each point's title carries its day and CP@k: those of compare.
            titles = chart.locator(f"circle.point.{model} title").all_text_contents()
            assert titles == [
                f"{day}: {model} CP@100 {value:.4f}"
                for day, value in metrics.card_precision_per_day.items()
            ]
            row = page.locator(f'#models tr[data-model="{model}"]')
            expect(row.locator("td.version")).to_have_text(f"v{metrics.version}")
            expect(row.locator("td.ap")).to_have_text(f"{metrics.average_precision:.4f}")
            expect(row.locator("td.cp")).to_have_text(f"{metrics.card_precision:.4f}")
            for tier in schemas.DECISIONS:
                per_day = f"{metrics.decisions_per_day[tier]:,.1f}"
                expect(row.locator(f"td.{tier}")).to_have_text(per_day)
        expect(chart.locator(".legend-item")).to_have_text(["champion v1", "challenger v2"])
        expect(chart.locator("text.axis-label")).to_have_text(["day (UTC)", "CP@100 of the day"])
        expect(page.locator("#verdict")).to_have_text(f"Verdict: {expected.reason}.")
        expect(page.locator("#window")).to_contain_text(
            f"Compared on {expected.payments:,} payments of 7 days (2026-11-07..2026-11-13)"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "models.png"), animations="disabled")

        # Kept for a minute: the view gone, the API still answers what it computed.
        shutil.rmtree(lake / "scored")
        status, body = get_json_status(url(settings, "/api/models"))
        assert status == 200 and body["reason"] == expected.reason
        assert body["card_precision_per_day"][0] == {
            "day": "2026-11-07",
            "champion": expected.champion.card_precision_per_day.iloc[0],
            "challenger": expected.challenger.card_precision_per_day.iloc[0],
        }
        with pytest.raises(compare.CompareError, match=r"^No scored view at .*--lake"):
            board.model_comparison(max_age_s=0)


def test_models_api_without_a_challenger_answers_one_sentence(
    kafka_bootstrap, topics, tmp_path, page, mlflow_store
):
    from playwright.sync_api import expect

    from .helpers import SHADOW_DAYS, synthetic_view, write_lake

    # Every day written as the score job wrote them before a challenger existed.
    lake = tmp_path / "lake"
    write_lake(lake, *synthetic_view(per_day=50), old_days=SHADOW_DAYS)
    settings = settings_for(kafka_bootstrap, topics, lake)
    with running(settings):
        status, body = get_json_status(url(settings, "/api/models"))
        assert status == 404 and list(body) == ["error"]
        assert body["error"] == (
            "No payment of the scored view has a challenger score: set the registry alias "
            "challenger and let the score job run."
        )
        page.goto(url(settings))
        page.locator("#to-models").click()
        expect(page.locator("#models-status")).to_have_text(
            f"Nothing to compare yet: {body['error']}"
        )
        expect(page.locator("#comparison")).to_be_hidden()

    # Challenger scores, but a registry that does not hold the challenger's version.
    other = tmp_path / "other"
    write_lake(other, *synthetic_view(per_day=50))
    settings = settings_for(kafka_bootstrap, topics, other, model_name="not-registered")
    with running(settings):
        status, body = get_json_status(url(settings, "/api/models"))
        assert status == 503 and list(body) == ["error"]
        assert body["error"].startswith("Cannot load model models:/not-registered/2: ")
        assert "\n" not in body["error"] and body["error"].endswith(".")


# --- the model-health page: what the monitor wrote ----------------------------------------


@contextmanager
def web_only(lake: Path, access: auth.Access):
    """A dashboard over ``lake``, its web server alone: no broker, no alerts."""
    lake.mkdir(parents=True, exist_ok=True)
    settings = dashboard.Settings(
        bootstrap_servers="127.0.0.1:1",
        alerts_topic="alerts",
        labels_topic="labels",
        lake=lake,
        port=free_port(),
        access=access,
    )
    web = dashboard.server(dashboard.Dashboard(settings))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started, "the dashboard did not start"
    try:
        yield settings
    finally:
        web.should_exit = True
        thread.join(10)


def test_model_health_api_checks_days_answers_every_role_and_says_when_empty(tmp_path, users):
    from .helpers import write_monitoring

    lake = tmp_path / "lake"
    with web_only(lake, auth.Access(mode="password", users_file=users)) as settings:
        nobody = Client(settings)
        assert nobody.call("GET", "/api/model-health")[0] == 401
        assert nobody.call("GET", "/health")[0] == 303
        vera = Client(settings)
        assert vera.login("vera", "vera-pass")[0] == 200
        empty = vera.call("GET", "/api/model-health")[1]
        assert (empty["days"], empty["events"], empty["drift"]["features"]) == ([], [], [])
        assert (
            empty["message"] == f"No monitor run yet: run ./spark-submit.sh monitor --out {lake}."
        )
        for days in ("0", "367", "-1", "7.5", "many"):
            assert vera.call("GET", f"/api/model-health?days={days}") == (
                400,
                {"error": "days must be a whole number from 1 to 366."},
            )

        written = write_monitoring(lake)
        status, body = vera.call("GET", "/api/model-health?days=3")
        assert status == 200 and body["message"] is None
        assert (body["k"], body["as_of"]) == (100, "2026-11-10T12:00:00.000Z")
        assert [day["date"] for day in body["days"]] == ["2026-11-08", "2026-11-09", "2026-11-10"]
        first = written["daily"].iloc[7]
        assert body["days"][0] == {
            "date": "2026-11-08",
            "payments": 1000,
            "alerts": 41,
            "approve": 959,
            "review": 36,
            "decline": 5,
            "mature": True,
            "frauds_known": 15,
            "alerted_frauds": 5,
            "precision": pytest.approx(5 / 41),
            "recall": pytest.approx(5 / 15),
            "card_precision_at_k": 0.2,
            "score_p50": 0.1,
            "score_p90": 0.37,
            "score_p99": 0.6,
            "score_p99_9": 0.9,
            "model_version": "4",
            "alerts_median_7d": first["alerts_median_7d"],
            "precision_median_7d": first["precision_median_7d"],
        }
        # An immature day's precision is missing, not zero.
        assert [body["days"][i][name] for i in (1, 2) for name in ("precision", "recall")] == [
            None
        ] * 4
        assert body["drift"] == {
            "features": ["amount", "card_tx_count_1d"],
            "psi": {"amount": [0.01, 0.6, 0.8], "card_tx_count_1d": [0.02] * 3},
            "threshold": 0.25,
        }
        assert [(e["day"], e["kind"], e["metric"]) for e in body["events"]] == [
            ("2026-11-10", "drift", "psi:amount"),
            ("2026-11-09", "drift", "psi:amount"),
            ("2026-11-08", "precision", "precision"),
        ]
        assert body["events"][0]["reason"] == (
            "On 2026-11-10 feature amount drifted from the training data of fraudstream "
            "version 4: PSI 0.800 > 0.25."
        )
        assert len(vera.call("GET", "/api/model-health")[1]["days"]) == 10
        for user in ("ana", "adam"):
            client = Client(settings)
            client.login(user, f"{user}-pass")
            assert client.call("GET", "/api/model-health?days=3") == (200, body)


def test_health_page_draws_the_monitors_days_events_and_drift(tmp_path, page):
    import shutil

    from playwright.sync_api import expect

    from .helpers import MONITORED_ALERTS, write_monitoring

    lake = tmp_path / "lake"
    written = write_monitoring(lake)
    daily = written["daily"]
    with web_only(lake, auth.Access()) as settings:
        page.goto(url(settings, "/models"))
        page.locator("#to-health").click()
        expect(page.locator("#health")).to_be_visible(timeout=30_000)
        expect(page.locator("#health-window")).to_contain_text(
            "10 days, 2026-11-01..2026-11-10; 2 of them immature"
        )
        alerts = page.locator("#alerts-chart")
        titles = alerts.locator("circle.point.alerts title").all_text_contents()
        assert titles == [
            f"{day}: alerts {count}"
            for day, count in zip(daily["date"], MONITORED_ALERTS, strict=True)
        ]
        # The volume threshold from the fourth day on, when the baseline has three days.
        expect(alerts.locator("circle.point.limit")).to_have_count(7)
        precision = page.locator("#precision-chart")
        # The immature days have no precision: shaded, and no point drawn on them.
        expect(precision.locator("circle.point.precision")).to_have_count(8)
        expect(precision.locator("rect.band")).to_have_count(1)
        expect(precision.locator("text.band-label")).to_have_text("labels not in yet")
        # The band covers the last two days: it starts after the last matured day's point.
        last_mature = precision.locator("circle.point.precision").last.get_attribute("cx")
        assert float(precision.locator("rect.band").get_attribute("x")) > float(last_mature)
        assert precision.locator("circle.point.precision title").all_text_contents()[-1] == (
            f"2026-11-08: precision {5 / 41:.4f}"
        )
        expect(precision.locator(".legend-item")).to_have_text(["precision", "recall", "CP@100"])
        expect(page.locator("#scores-chart polyline.series")).to_have_count(4)
        drift = page.locator("#drift-chart")
        expect(drift.locator(".legend-item")).to_have_text(["amount", "card_tx_count_1d"])
        expect(drift.locator("line.rule title")).to_have_text("PSI threshold 0.25")
        assert drift.locator("circle.point.f0 title").all_text_contents()[-2:] == [
            "2026-11-09: amount PSI 0.600",
            "2026-11-10: amount PSI 0.800",
        ]
        events = page.locator("#health-events tbody tr")
        expect(events).to_have_count(len(written["events"]))
        expect(events.first.locator("td.reason")).to_have_text(written["events"]["reason"].iloc[-1])
        days = page.locator("#health-days tbody tr")
        expect(days).to_have_count(10)
        expect(days.first).to_have_attribute("data-mature", "false")
        expect(days.first.locator("td.precision")).to_have_text("\u2013")  # a dash: none
        expect(days.nth(2).locator("td.precision")).to_have_text(f"{5 / 41:.4f}")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "health.png"), full_page=True, animations="disabled")

        shutil.rmtree(lake / "monitoring")
        page.select_option("#days", "30")
        expect(page.locator("#health-status")).to_have_text(
            f"No monitor run yet: run ./spark-submit.sh monitor --out {lake}."
        )
        expect(page.locator("#health")).to_be_hidden()
