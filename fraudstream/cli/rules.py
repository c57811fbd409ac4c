"""The ``fraudstream rules`` subcommands: fraud-ops rules as events on the rules topic.

Wired into ``fraudstream`` by :func:`add_commands`; the rules themselves are
:mod:`fraudstream.scoring.rules`::

    fraudstream rules add ID --condition "amount > 2000 AND is_ecom = 1" --action review
    fraudstream rules list | show ID | disable ID | enable ID | columns
    fraudstream rules backtest --data data/demo "amount > 2000 AND is_ecom = 1"

``add`` checks the condition with Spark (a local session, a few seconds) before it
publishes; a rule Spark cannot evaluate is refused with one sentence.
"""

from __future__ import annotations

import argparse
import getpass
import math
from pathlib import Path

from fraudstream import config, features
from fraudstream.cli import options
from fraudstream.errors import FraudstreamError
from fraudstream.scoring import rules


def _servers(args: argparse.Namespace) -> str:
    return config.bootstrap_servers(args.brokers)


def _read(args: argparse.Namespace) -> rules.RuleSet:
    from fraudstream.kafka import clients

    servers = _servers(args)
    clients.require_topics(servers, [args.topic])
    return rules.read_rules(servers, args.topic)


def _spark():
    return rules.local_session("fraudstream-rules")


def _line(rule: rules.Rule) -> str:
    state = "enabled" if rule.enabled else "disabled"
    return (
        f"{rule.rule_id} v{rule.version} [{state}] {rule.action}: {rule.condition}"
        f"  ({rule.author}, {rule.published_time})"
    )


def _publish(args: argparse.Namespace, rule: rules.Rule) -> int:
    _published(args, rule, rules.publish(_servers(args), args.topic, rule, None))
    return 0


def _published(args: argparse.Namespace, rule: rules.Rule, offset: int) -> None:
    print(f"Published {rule.rule_id} v{rule.version} to {args.topic} (offset {offset}).")


def _current(args: argparse.Namespace) -> rules.Rule:
    rule = _read(args).rules.get(args.rule_id)
    if rule is None:
        raise FraudstreamError(f"No rule {args.rule_id} on {args.topic} (fraudstream rules list).")
    return rule


def _add(args: argparse.Namespace) -> int:
    previous = _read(args).rules.get(args.rule_id)
    rule = rules.new_rule(
        args.rule_id,
        args.condition,
        args.action,
        args.author,
        args.description or (previous.description if previous else ""),
        previous=previous,
    )
    rules.check_condition(_spark(), rule.condition)
    return _publish(args, rule)


def _set_enabled(enabled: bool):
    def handler(args: argparse.Namespace) -> int:
        from fraudstream.kafka import clients

        servers = _servers(args)
        clients.require_topics(servers, [args.topic])
        try:
            rule, offset = rules.set_enabled(
                servers,
                args.topic,
                args.rule_id,
                enabled,
                args.author,
                check=lambda condition: rules.check_condition(_spark(), condition),
            )
        except rules.UnknownRuleError:
            raise FraudstreamError(
                f"No rule {args.rule_id} on {args.topic} (fraudstream rules list)."
            ) from None
        if offset is None:
            print(
                f"{rule.rule_id} v{rule.version} is {'enabled' if enabled else 'disabled'} already."
            )
        else:
            _published(args, rule, offset)
        return 0

    return handler


def _list(args: argparse.Namespace) -> int:
    found = _read(args)
    shown = [r for _, r in sorted(found.rules.items()) if args.all or r.enabled]
    for rule in shown:
        print(_line(rule))
    if not shown:
        print(f"No {'' if args.all else 'enabled '}rules on {args.topic}.")
    for record, reason in found.refused:
        print(f"set aside: partition {record.partition} offset {record.offset}: {reason}")
    return 0


def _show(args: argparse.Namespace) -> int:
    rule = _current(args)
    for name, value in rule.__dict__.items():
        print(f"{name}: {value}")
    return 0


def _columns(_: argparse.Namespace) -> int:
    from fraudstream import schemas

    for name in rules.RULE_COLUMNS:
        kind = (
            "payment field"
            if name in schemas.PAYMENT_COLUMNS
            else "the model's score"
            if name == "score"
            else "feature"
        )
        print(f"{name}  ({kind})")
    return 0


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _backtest(args: argparse.Namespace) -> int:
    from fraudstream import lake, storage
    from fraudstream.ml import dataset
    from fraudstream.scoring.model import load_model

    data = args.data
    if not storage.is_uri(data) and not (Path(data) / lake.EVENTS).is_dir():
        raise FraudstreamError(f"No events folder at {Path(data) / lake.EVENTS}.")
    model = None if args.no_model else load_model(args.model)
    delay = model.label_delay_days if model else features.DEFAULT_LABEL_DELAY_DAYS
    spark = _spark()
    if model is None and "score" in rules.check_condition(spark, args.condition):
        raise FraudstreamError(
            "The condition names score: backtest it with a model, not --no-model."
        )
    payments = dataset.read_events(spark, data)
    labels = dataset.read_labels(spark, storage.join(data, lake.LABELS))
    result = rules.backtest(rules.rule_rows(payments, labels, delay, model), args.condition)
    days = result.days
    columns = ["payments", "frauds", "hits", "hit_frauds"]
    if model is not None:
        columns += ["model_alerts", "overlap"]
    shown = days if args.all_days else days[days["hits"] > 0]
    print(shown[["day", *columns]].to_string(index=False))
    print(
        f"{result.hits:,} hits on {result.payments:,} payments over {len(days)} days "
        f"({result.hits / max(len(days), 1):,.1f} a day); precision "
        f"{_fmt(result.precision)}, recall {_fmt(result.recall)} "
        f"({result.hit_frauds:,} of {result.frauds:,} frauds)."
    )
    if model is not None and result.model_alerts is not None and result.overlap is not None:
        print(
            f"Model {model.name} v{model.version} alerted {result.model_alerts:,} of them; "
            f"{result.overlap:,} of the rule's hits ({_share(result.overlap, result.hits)}) "
            "were alerted by the model too."
        )
    return 0


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``rules`` and its actions to the ``fraudstream`` command's subcommands."""
    group = commands.add_parser(
        "rules",
        help="fraud-ops rules: publish, list, disable, backtest",
        description="Rules are Spark SQL conditions over a payment's fields, its features "
        "and score, published as events on the compacted rules topic.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler, help_text: str, rule_id: bool = False, topic=True):
        parser = actions.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        parser.set_defaults(handler=handler)
        if topic:
            options.add_kafka(parser, "rules", flag="--topic")
        if rule_id:
            parser.add_argument("rule_id", metavar="ID", help="the rule's id")
        return parser

    author = {"default": getpass.getuser(), "help": "who makes the change (default: %(default)s)"}
    add = action("add", _add, "publish a new rule, or a new version of one", rule_id=True)
    add.add_argument("--condition", required=True, help="Spark SQL boolean expression")
    add.add_argument("--action", required=True, choices=rules.ACTIONS, help="what a hit does")
    add.add_argument("--description", help="what the rule is for (default: the previous version's)")
    add.add_argument("--author", **author)
    for name, enabled in (("disable", False), ("enable", True)):
        parser = action(name, _set_enabled(enabled), f"{name} a rule (a new version)", rule_id=True)
        parser.add_argument("--author", **author)
    listing = action("list", _list, "the enabled rules, newest version of each")
    listing.add_argument("--all", action="store_true", help="disabled rules too")
    action("show", _show, "one rule's newest version in full", rule_id=True)
    action("columns", _columns, "the columns a condition may name", topic=False)
    backtest = action(
        "backtest",
        _backtest,
        "run a condition over a history: hits per day, precision, recall, overlap with the model",
        topic=False,
    )
    backtest.add_argument("condition", metavar="CONDITION", help="Spark SQL boolean expression")
    backtest.add_argument("--data", required=True, help="history folder with events/ and labels/")
    backtest.add_argument(
        "--model",
        default=config.DEFAULT_MODEL_URI,
        help="model to compare with (default: %(default)s)",
    )
    backtest.add_argument("--no-model", action="store_true", help="no model: no score, no overlap")
    backtest.add_argument(
        "--all-days", action="store_true", help="every day, not only days with hits"
    )
