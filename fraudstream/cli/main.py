"""The ``fraudstream`` command: the local services and the tools around the Spark jobs.

The Spark jobs themselves run through ``./spark-submit.sh JOB``; this command holds
what is not a Spark job::

    fraudstream kafka start [--partitions N]   # local broker + the design's topics
    fraudstream kafka status
    fraudstream kafka stop
    fraudstream kafka-cluster start|stop|status   # three nodes, replicated, SASL_SSL too
    fraudstream spark start|stop|status      # a local Spark standalone cluster (2 workers)
    fraudstream produce --data data/sample    # publish Parquet events and labels to Kafka
    fraudstream produce --simulate --rate 500 # simulate events and publish them live
    fraudstream model status                  # registered versions and the champion
    fraudstream model promote --version N --data DIR   # the promotion gate, on its own
    fraudstream model compare --out OUT       # champion vs shadow challenger, live labels
    fraudstream model promote --live --out OUT   # ... and move @champion if it wins
    fraudstream postgres start|stop|status    # the bank database (CDC source)
    fraudstream bank book --limit N [--rollback]   # book card payments in the bank database
    fraudstream connect start|stop|status     # Kafka Connect + Debezium: bank -> payments
    fraudstream dashboard                     # the alert topic on a live web page
    fraudstream users add|list|remove         # the dashboard's users and their roles
    fraudstream alerts tail                   # the alert topic in the terminal
    fraudstream rules add|list|show|disable|enable|columns|backtest   # fraud-ops rules

Commands that talk to Kafka take ``--kafka-properties FILE`` (or
``$FRAUDSTREAM_KAFKA_PROPERTIES``): Java-style client properties, for SASL and TLS.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

from fraudstream import config
from fraudstream.cli import cdc as cdc_cli
from fraudstream.cli import options
from fraudstream.cli import rules as rules_cli
from fraudstream.cli import spark as spark_cluster_cli
from fraudstream.cli import users as users_cli
from fraudstream.cli.services import Service, add_actions, add_home, add_service, from_flags
from fraudstream.errors import FraudstreamError, reports_errors
from fraudstream.kafka import clients, propfile
from fraudstream.ops import broker as local_broker
from fraudstream.ops.process import port_in_use
from fraudstream.ui import auth


class CommandError(FraudstreamError):
    """A command cannot run as asked; the message is one sentence for the user."""


_broker_from = from_flags(local_broker.LocalBroker)


def _create_topics(broker: local_broker.LocalBroker, args: argparse.Namespace) -> None:
    if not args.no_topics:
        created = local_broker.create_topics(broker.bootstrap_servers, partitions=args.partitions)
        if created:
            print(f"Created topics: {', '.join(created)} ({args.partitions} partitions each).")


BROKER = Service(
    title="Kafka broker",
    settings=_broker_from,
    start=local_broker.start,
    stop=local_broker.stop,
    running_pid=local_broker.running_pid,
    address=lambda broker: broker.bootstrap_servers,
    after_start=_create_topics,
    details=lambda broker: _print_topics(local_broker.describe_topics(broker.bootstrap_servers)),
)


_cluster_from = from_flags(local_broker.LocalCluster)


def _cluster_start(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    began = time.monotonic()
    pids, started = local_broker.start_cluster(cluster)
    verb = f"started in {time.monotonic() - began:.0f} s" if started else "already running"
    print(f"Kafka cluster of {cluster.nodes} nodes {verb} (pids {', '.join(map(str, pids))}).")
    print(f"  plain:    {cluster.bootstrap_servers}")
    print(f"  SASL_SSL: {cluster.secure_bootstrap_servers}")
    print(f"  client properties (SCRAM user fraudstream): {cluster.properties_file()}")
    if not args.no_topics:
        replicas = min(3, cluster.nodes)
        topics = {
            name: {**settings, "min.insync.replicas": str(min(2, replicas))}
            for name, settings in local_broker.DESIGN_TOPICS.items()
        }
        created = local_broker.create_topics(
            cluster.bootstrap_servers,
            topics,
            partitions=args.partitions,
            replication_factor=replicas,
            client_properties={},
        )
        if created:
            print(
                f"Created topics: {', '.join(created)} ({args.partitions} partitions, "
                f"{replicas} replicas, min.insync.replicas {min(2, replicas)})."
            )
    return 0


def _cluster_stop(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    if args.node is not None and not 1 <= args.node <= cluster.nodes:
        raise CommandError(f"--node must be between 1 and {cluster.nodes}.")
    pids = local_broker.stop_cluster(cluster, args.node)
    if not pids:
        print(f"No node started from {cluster.home} is running.")
    else:
        print(f"Stopped {len(pids)} node(s) (pids {', '.join(map(str, pids))}).")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    running = []
    for node, broker in enumerate(cluster.brokers, start=1):
        pid = local_broker.running_pid(broker)
        where = f"{broker.bootstrap_servers}, SASL_SSL {broker.host}:{broker.secure_port}"
        print(f"node {node}: " + (f"running (pid {pid}) on {where}" if pid else "not running"))
        if pid:
            running.append(broker)
    if not running:
        return 1
    # With client properties, ask through the SASL_SSL listeners: it checks the login too.
    secure = bool(propfile.resolve_properties())
    servers = ",".join(
        f"{b.host}:{b.secure_port}" if secure else b.bootstrap_servers for b in running
    )
    clients.require_topics(servers, [])
    _print_topics(local_broker.describe_topics(servers))
    return 0


def _print_topics(topics: dict[str, dict[str, str]]) -> None:
    for topic, details in sorted(topics.items()):
        retention = details.get("retention.ms")
        kept = {"-1": "kept forever", None: "broker's default retention"}.get(
            retention, f"retention.ms={retention}"
        )
        if details.get("cleanup.policy") == "compact":
            kept = "compacted (each key's newest record)"
        copies = details.get("replicas", "1")
        replicas = f", {copies} replicas" if copies != "1" else ""
        isr = details.get("min.insync.replicas")
        isr = f", min.insync.replicas {isr}" if isr and replicas else ""
        print(f"  {topic}: {details['partitions']} partitions{replicas}{isr}, {kept}")


def _produce_plan(args: argparse.Namespace):
    from fraudstream.data import produce

    cut = {"start": args.start, "end": args.end, "limit": args.limit}
    if args.simulate:
        from fraudstream.data import simulate

        settings = simulate.SimulationConfig(
            customers=args.customers,
            terminals=args.terminals,
            days=args.days,
            start_date=args.simulate_from,
            seed=args.seed,
        )
        payments, labels = simulate.simulate(settings)
        name = f"simulator {settings!r}"
        return produce.make_plan(name, payments, None if args.no_labels else labels, **cut)
    data = Path(args.data)
    if not (data / "events").is_dir():
        raise CommandError(
            f"No events folder at {data / 'events'}: give --data a folder written by "
            "./spark-submit.sh generate or import."
        )
    return produce.folder_plan(data, with_labels=not args.no_labels, **cut)


def _serve_metrics(args: argparse.Namespace, make):
    """The command's metrics, ``make(metrics_module)``, served on ``--metrics-port``.

    None without a port. A busy port stops the command before it starts its work.
    """
    if not args.metrics_port:
        return None
    if not 0 < args.metrics_port <= 65535:
        raise CommandError("--metrics-port must be between 0 (none) and 65535.")
    # Imported here: the CLI starts fast when no metrics are asked for.
    from fraudstream import metrics

    made = make(metrics)
    metrics.serve(made.registry, args.metrics_port, args.metrics_host)
    return made


def _produce(args: argparse.Namespace) -> int:
    import signal

    from fraudstream.data import produce
    from fraudstream.kafka import clients

    if args.rate is not None and args.rate <= 0:
        raise CommandError("--rate must be a positive number of payments per second.")
    metrics = _serve_metrics(args, lambda module: module.ProducerMetrics(args.rate))
    servers = config.bootstrap_servers(args.brokers)
    topics = [args.topic] if args.no_labels else [args.topic, args.labels_topic]
    clients.require_topics(servers, topics)
    if args.if_empty:
        held = produce.topic_size(servers, args.topic)
        if held:
            print(f"{args.topic} on {servers} already holds {held:,} events; nothing published.")
            return 0
    plan = _produce_plan(args)
    store = produce.PositionStore(Path(args.state_dir))
    start = produce.Position()
    saved = store.load(plan, *topics)
    if args.resume and saved is not None:
        start = saved
        print(f"Resuming after {start.payments:,} payments and {start.labels:,} labels.")
    elif saved is not None and saved != plan.total:
        print(
            f"Note: an earlier run of these events stopped after {saved.payments:,} payments; "
            "this run starts from the beginning (--resume continues it instead).",
            file=sys.stderr,
        )

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    began = time.monotonic()
    try:
        reached = produce.run(
            plan,
            servers,
            payments_topic=args.topic,
            labels_topic=args.labels_topic,
            rate=args.rate,
            start=start,
            save=lambda position: store.save(plan, position, *topics),
            metrics=metrics,
        )
    except KeyboardInterrupt:
        reached = store.load(plan, *topics) or start
        print(
            f"Stopped after {reached.payments:,} of {plan.total.payments:,} payments and "
            f"{reached.labels:,} of {plan.total.labels:,} labels; all of them are "
            "acknowledged. Run the same command with --resume to continue."
        )
        return 130
    seconds = time.monotonic() - began
    sent = reached.payments - start.payments
    line = f"Published {sent:,} payment events to {args.topic}"
    if plan.labels is not None:
        line += f" and {reached.labels - start.labels:,} label events to {args.labels_topic}"
    rate = f"{sent / seconds:,.0f} payments/s" if seconds > 0 else "no time"
    print(f"{line} on {servers} in {seconds:.1f} s ({rate}).")
    return 0


def _model_status(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from fraudstream.ml import registry, tracking

    tracking.use_experiment("fraudstream")
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{args.model_name}'")
    if not versions:
        print(f"No version of {args.model_name} is registered in {tracking.tracking_uri()}.")
        return 1
    champion = registry.champion_version(client, args.model_name)
    for version in sorted(versions, key=lambda v: int(v.version)):
        mark = "  <- champion" if str(version.version) == champion else ""
        tags = version.tags
        print(
            f"{args.model_name} v{version.version}: {tags.get('model_type', '?')}, "
            f"evaluated on {tags.get('evaluation_window', '?')}{mark}"
        )
    return 0


def _model_promote(args: argparse.Namespace) -> int:
    if args.live and (args.version is not None or args.data is not None):
        raise CommandError("model promote takes --live or --version and --data, not both.")
    if args.live:
        return _model_promote_live(args)
    if args.version is None or args.data is None:
        raise CommandError(
            "model promote needs --version N and --data DIR, or --live and --out OUT."
        )
    from fraudstream.ml import tracking, training

    tracking.use_experiment("fraudstream")
    data = Path(args.data)
    if not (data / "events").is_dir():
        raise CommandError(f"No events folder at {data / 'events'}.")
    decision = training.gate_on_data(
        data, str(args.version), args.model_name, args.delay_days, args.train_start
    )
    print(f"{'Promoted' if decision.promoted else 'Not promoted'}: {decision.reason}.")
    return 0


def _model_compare(args: argparse.Namespace) -> int:
    from fraudstream.ml import compare

    result = compare.live_comparison(args.out, args.model_name, args.days, args.delay_days)
    print(compare.report(result))
    return 0


def _model_promote_live(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from fraudstream.ml import compare, registry

    result = compare.live_comparison(args.out, args.model_name, args.days, args.delay_days)
    print(compare.report(result))
    client = MlflowClient()
    current = registry.champion_version(client, args.model_name)
    version = result.challenger.version
    if not result.challenger_wins:
        print(f"Not promoted: {result.reason}; @champion stays at version {current}.")
    elif current == version:
        print(f"Not promoted: version {version} is already the champion.")
    else:
        client.set_registered_model_alias(args.model_name, registry.CHAMPION, version)
        # The champion now: a challenger alias on it would have the job score every
        # payment twice with one model. The next challenger is registered anew.
        client.delete_registered_model_alias(args.model_name, registry.CHALLENGER)
        print(
            f"Promoted: @champion moved from version {current} to {version}: {result.reason}; "
            f"@{registry.CHALLENGER} removed."
        )
    return 0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dashboard_access(args: argparse.Namespace):
    """Who may do what on the dashboard, from its flags; a setup that is not safe is refused."""
    local = _is_loopback(args.host)
    if args.auth == "none" and not local:
        raise CommandError(
            f"--auth none serves this machine alone; to listen on {args.host} use "
            "--auth password or --auth proxy."
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("Give both --tls-cert and --tls-key, or neither.")
    for path in (args.tls_cert, args.tls_key):
        if path and not Path(path).is_file():
            raise CommandError(f"No file at {path}.")
    if not local and not args.tls_cert and not args.plain_http:
        raise CommandError(
            f"Serving on {args.host} sends logins and cookies over the network: give "
            "--tls-cert and --tls-key, or --plain-http behind a proxy that serves TLS."
        )
    access = auth.Access(
        mode=args.auth,
        users_file=Path(args.users),
        proxy_header=args.proxy_header,
        trusted_proxies=tuple(args.trusted_proxy or auth.DEFAULT_TRUSTED_PROXIES),
        secure_cookies=bool(args.tls_cert) or (not local and args.plain_http),
    )
    auth.Gate(access).check()
    return access


def _dashboard(args: argparse.Namespace) -> int:
    import logging

    from fraudstream import logs
    from fraudstream.kafka import clients, propfile
    from fraudstream.ui import dashboard

    lake = Path(args.lake)
    if not lake.is_dir():
        raise CommandError(
            f"No lake folder at {lake}: give --lake the output root of the score job "
            "(it reads card locations from LAKE/card_locations)."
        )
    if args.window < dashboard.PAGE_SIZE or args.refill < 0:
        raise CommandError(
            f"--window must be at least {dashboard.PAGE_SIZE} and --refill at least 0."
        )
    access = _dashboard_access(args)
    if port_in_use(args.host, args.port):
        raise CommandError(f"Port {args.port} on {args.host} is in use; choose another --port.")
    if args.metrics_port:
        from fraudstream import metrics

        if not 0 < args.metrics_port <= 65535 or args.metrics_port == args.port:
            raise CommandError("--metrics-port must be a port from 1 to 65535 other than --port.")
        metrics.check_port(args.metrics_port, args.metrics_host)
    servers = config.bootstrap_servers(args.brokers)
    # Not the rules topic: without it the alerts are still worth showing, and the rules
    # page says it is missing.
    clients.require_topics(servers, [args.topic, args.labels_topic])
    logs.configure()
    # kafka-python logs every failed reconnect; while a broker restarts that is noise.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    settings = dashboard.Settings(
        bootstrap_servers=servers,
        alerts_topic=args.topic,
        labels_topic=args.labels_topic,
        lake=lake,
        rules_topic=args.rules_topic,
        group=args.group,
        host=args.host,
        port=args.port,
        window=args.window,
        refill_per_partition=args.refill,
        client_properties=tuple(propfile.resolve_properties().items()),
        model_name=args.model_name,
        access=access,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    scheme = "https" if args.tls_cert else "http"
    print(
        f"Dashboard on {scheme}://{args.host}:{args.port}/ (alerts from {args.topic} on "
        f"{servers}; --auth {args.auth})."
    )
    sys.stdout.flush()
    dashboard.serve(settings)
    return 0


def _alerts_tail(args: argparse.Namespace) -> int:
    import json

    from fraudstream.kafka import clients
    from fraudstream.ui import alert_feed

    servers = config.bootstrap_servers(args.brokers)
    clients.require_topics(servers, [args.topic])
    feed = alert_feed.tail(
        servers,
        args.topic,
        from_beginning=args.from_beginning,
        max_alerts=args.max,
        on_skip=lambda line: print(line, file=sys.stderr),
    )
    try:
        for alert in feed:
            print(json.dumps(alert) if args.json else alert_feed.format_line(alert), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        # Ctrl-C is how a tail ends; a closed pipe (| head) means nobody reads on.
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fraudstream`` command line: one subcommand per service or tool.

    Each subcommand's parser sets ``handler``, the function :func:`main` calls with the
    parsed flags.
    """
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Local services and tools of the fraudstream pipeline. "
        "Spark jobs run with ./spark-submit.sh JOB.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def broker_options(action: argparse.ArgumentParser, name: str) -> None:
        add_home(action, str(config.VAR_DIR / "kafka"), "the broker's config, data, logs and PID")
        action.add_argument("--port", type=int, default=9092, help="client port (default: 9092)")
        action.add_argument(
            "--controller-port", type=int, default=9093, help="KRaft port (default: 9093)"
        )
        if name == "start":
            action.add_argument(
                "--partitions",
                type=int,
                default=4,
                help="partitions of each topic created (default: %(default)s)",
            )
            action.add_argument(
                "--no-topics", action="store_true", help="do not create the design's topics"
            )

    add_service(
        commands,
        "kafka",
        "start, stop or inspect the local Kafka broker",
        BROKER,
        (
            "start the broker (if needed) and create the topics",
            "stop the broker that start started",
            "say whether the broker runs, and list its topics",
        ),
        broker_options,
    )

    def cluster_options(action: argparse.ArgumentParser, name: str) -> None:
        add_home(
            action,
            str(config.VAR_DIR / "kafka-cluster"),
            "the nodes, certificates and client properties",
        )
        action.add_argument("--nodes", type=int, default=3, help="nodes (default: %(default)s)")
        action.add_argument(
            "--port", type=int, default=19092, help="node 1's plain port; node i's is PORT+i-1"
        )
        action.add_argument(
            "--secure-port", type=int, default=19095, help="node 1's SASL_SSL port (default: 19095)"
        )
        action.add_argument(
            "--controller-port",
            type=int,
            default=19192,
            help="node 1's KRaft port (default: 19192)",
        )
        if name == "start":
            action.add_argument("--partitions", type=int, default=4, help="default: %(default)s")
            action.add_argument(
                "--no-topics", action="store_true", help="do not create the design's topics"
            )
        if name == "stop":
            action.add_argument("--node", type=int, help="stop only this node (1, 2, ...)")
        if name == "status":
            propfile.add_properties_option(action)

    add_actions(
        commands,
        "kafka-cluster",
        "start, stop or inspect a local three-node Kafka cluster (plain and SASL_SSL)",
        [
            ("start", _cluster_start, "start the nodes (if needed) and create replicated topics"),
            ("stop", _cluster_stop, "stop the nodes that start started (or one of them)"),
            ("status", _cluster_status, "say which nodes run, and list the topics"),
        ],
        cluster_options,
    )

    produce = commands.add_parser(
        "produce",
        help="publish payment and label events to Kafka, in time order",
        description="Publish payment events (in event-time order, keyed by card, acks=all, "
        "idempotent) and label events (at their reported time) from a folder written by "
        "the generate or import job, or from the simulator. Ctrl-C stops cleanly; "
        "--resume continues from there.",
    )
    produce.set_defaults(handler=_produce)
    source = produce.add_mutually_exclusive_group()
    source.add_argument(
        "--data", default=str(config.SAMPLE_DIR), help="folder with events/ (default: %(default)s)"
    )
    source.add_argument(
        "--simulate", action="store_true", help="simulate the events now instead of reading them"
    )
    simulation = produce.add_argument_group("simulation (with --simulate)")
    simulation.add_argument("--customers", type=int, default=1000, help="default: %(default)s")
    simulation.add_argument("--terminals", type=int, default=2000, help="default: %(default)s")
    simulation.add_argument("--days", type=int, default=30, help="default: %(default)s")
    simulation.add_argument(
        "--simulate-from",
        type=date.fromisoformat,
        default=date(2018, 4, 1),
        help="first simulated day (default: %(default)s)",
    )
    simulation.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    produce.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        help="publish only payments (by event time) and labels (by reported time) from this day",
    )
    produce.add_argument(
        "--until", dest="end", type=date.fromisoformat, help="... and before this day"
    )
    produce.add_argument("--limit", type=int, help="publish only the first N payments")
    produce.add_argument(
        "--rate", type=float, help="payments per second (default: as fast as the broker takes)"
    )
    produce.add_argument(
        "--resume", action="store_true", help="continue where the same command last stopped"
    )
    produce.add_argument(
        "--state-dir",
        default=str(config.VAR_DIR / "produce"),
        help="where positions are saved for --resume (default: %(default)s)",
    )
    options.add_kafka(produce, "payments", "labels", flag="--topic")
    options.add_metrics(produce)
    produce.add_argument("--no-labels", action="store_true", help="publish payments only")
    produce.add_argument(
        "--if-empty",
        action="store_true",
        help="publish only if the payments topic holds nothing yet (for re-runnable demos)",
    )

    model_cmd = commands.add_parser("model", help="the registered models and the champion alias")
    model_actions = model_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = model_actions.add_parser("status", help="list the registered versions")
    status.set_defaults(handler=_model_status)
    promote = model_actions.add_parser(
        "promote",
        help="move @champion to a version if it beats the champion on the same window",
        description="Score a version and the champion on the newest test window of --data "
        "and move the champion alias to the version only if its average precision is higher. "
        "With --live: compare the shadow challenger with the champion on the scored payments "
        "of --out (as model compare) and move the champion alias to the challenger's version "
        "only if it wins: a higher CP@100 and an average precision not lower.",
    )
    promote.set_defaults(handler=_model_promote)
    promote.add_argument("--version", type=int, help="the candidate version")
    promote.add_argument("--data", help="folder with events/ and labels/")
    promote.add_argument(
        "--live",
        action="store_true",
        help="promote the shadow challenger if it wins on live traffic (with --out)",
    )
    promote.add_argument(
        "--train-start",
        type=date.fromisoformat,
        help="training start of the window (default: the latest, as the train job)",
    )
    compare = model_actions.add_parser(
        "compare",
        help="the champion against the shadow challenger on live traffic, labels arrived",
        description="Compare the champion and the shadow challenger (@challenger) on the "
        "payments both scored in the --days days whose labels have matured (they end "
        "--delay-days before the newest payment): AP, CP@100 and decisions per day by "
        "tier, and the verdict. The challenger wins with a higher CP@100 and an AP not lower.",
    )
    compare.set_defaults(handler=_model_compare)
    for action in (compare, promote):
        action.add_argument(
            "--out",
            default=str(config.LAKE_DIR),
            help="output root of the score job: scored/ and labels/ (default: %(default)s)",
        )
        action.add_argument(
            "--days", type=int, default=7, help="days compared (default: %(default)s)"
        )
        action.add_argument("--delay-days", type=int, default=7, help="label delay (default: 7)")
    for action in (status, promote, compare):
        action.add_argument("--model-name", default="fraudstream", help="registered model name")
    cdc_cli.add_commands(commands)
    rules_cli.add_commands(commands)
    users_cli.add_commands(commands)
    spark_cluster_cli.add_commands(commands)

    board = commands.add_parser(
        "dashboard",
        help="serve the ops dashboard: live alerts, card trails, analyst verdicts, rules, models, "
        "model health",
        description="Serve a web page of the alert topic: alerts as they arrive, counters, "
        "each alert's card-location trail, and fraud/genuine verdicts sent to the labels topic; "
        "a page of the fraud-ops rules, with their hits today, to enable or disable them; "
        "a page of the champion against the shadow challenger on live traffic; and a page of "
        "the model's health by day, as the monitor job writes it under --lake.",
    )
    board.set_defaults(handler=_dashboard)
    options.add_kafka(board, "alerts", "labels", "rules", flag="--topic")
    board.add_argument(
        "--group", default="fraudstream-dashboard", help="consumer group (default: %(default)s)"
    )
    board.add_argument(
        "--lake",
        default=str(config.LAKE_DIR),
        help="output root of the score job, for card locations and the monitor's days "
        "(default: %(default)s)",
    )
    board.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    board.add_argument("--port", type=int, default=8050, help="port (default: %(default)s)")
    board.add_argument(
        "--window", type=int, default=5000, help="alerts kept in memory (default: %(default)s)"
    )
    board.add_argument(
        "--refill",
        type=int,
        default=500,
        help="alerts read back from each partition at start (default: %(default)s)",
    )
    board.add_argument(
        "--auth",
        choices=auth.AUTH_MODES,
        default="password",
        help="who the user is: a login against --users (default), a trusted proxy's header, "
        "or none (this machine alone, everyone admin)",
    )
    board.add_argument(
        "--users",
        default=str(auth.DEFAULT_USERS_FILE),
        help="the users file of 'fraudstream users' (default: %(default)s)",
    )
    board.add_argument(
        "--proxy-header",
        default=auth.DEFAULT_PROXY_HEADER,
        help="with --auth proxy: the header naming the user (default: %(default)s)",
    )
    board.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="with --auth proxy: an address or network the header is believed from; "
        "repeat for more (default: 127.0.0.1 and ::1)",
    )
    board.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    board.add_argument("--tls-key", help="... and this private key (PEM)")
    board.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP beyond this machine: only behind a proxy that serves TLS",
    )
    board.add_argument(
        "--model-name",
        default="fraudstream",
        help="registered model whose champion and challenger the models page compares",
    )
    options.add_metrics(board)

    alerts = commands.add_parser("alerts", help="the alert topic in the terminal")
    alerts_actions = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = alerts_actions.add_parser(
        "tail",
        help="print alerts as they arrive, one line each",
        description="Print alerts as they arrive (time, card token, amount, merchant, score, "
        "top reason), each once. Ctrl-C ends it.",
    )
    tail.set_defaults(handler=_alerts_tail)
    options.add_kafka(tail, "alerts", flag="--topic")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest alert, not the newest"
    )
    tail.add_argument("--max", type=int, metavar="N", help="stop after N alerts")
    return parser


@reports_errors("fraudstream")
def main(argv: list[str] | None = None) -> int:
    """Run one ``fraudstream`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program's name; None reads ``sys.argv``.

    Returns
    -------
    int
        The exit status; a user-facing error exits with 2 (:func:`reports_errors`).
    """
    args = build_parser().parse_args(argv)
    propfile.use_properties_file(getattr(args, "kafka_properties", None))
    return args.handler(args)
