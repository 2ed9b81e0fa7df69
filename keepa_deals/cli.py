"""The ``keepa-deals`` console script."""

from __future__ import annotations

import argparse
import json
import sys

from keepa_base.errors import ConfigError, KeepaDealsError
from keepa_deals.progress import PROGRESS_S

POLICIES = ("governor", "legacy", "fifo")


def _simulate(args: argparse.Namespace) -> int:
    from simulator.report import run_policies
    from simulator.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    policies = list(POLICIES) if args.policy == "all" else [args.policy]
    reports = run_policies(scenario, policies, query_filter=not args.unfiltered_feed)
    out = reports if args.policy == "all" else reports[args.policy]
    json.dump(out, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


def _fake_keepa(args: argparse.Namespace) -> int:
    from keepa_api.server import serve_from_cli

    return serve_from_cli(args)


def _settings():
    import logging

    from keepa_deals.settings import load_settings

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


def _role(args: argparse.Namespace) -> int:
    from actors import processes

    settings = _settings()
    if args.command == "governor":
        return processes.run_governor(settings)
    if args.command == "worker":
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        return processes.run_worker(settings, args.threads)
    return processes.run_scheduler(settings)


def _metrics(args: argparse.Namespace) -> int:
    from metrics.exporter import serve

    return serve(_settings())


def _status(args: argparse.Namespace) -> int:
    from keepa_deals.status import main as status_main

    return status_main(_settings(), args.json)


def _replay_set_aside(args: argparse.Namespace) -> int:
    from keepa_deals.set_aside import main as replay_main

    return replay_main(_settings(), args.asins, args.list)


def _supervise(args: argparse.Namespace) -> int:
    from actors.processes import supervise

    _settings()
    return supervise(args.role)


def _up(args: argparse.Namespace) -> int:
    from keepa_deals.stack import up

    if args.progress_seconds < 0:
        raise ConfigError(f"--progress-seconds must be 0 (no progress lines) or more, got {args.progress_seconds}")
    return up(args.progress_seconds)


def _redis_guard(args: argparse.Namespace) -> int:
    from keepa_deals.redis_guard import guard

    _settings()
    argv = args.redis_argv[1:] if args.redis_argv[:1] == ["--"] else args.redis_argv
    if not argv:
        raise ConfigError("redis-guard needs the redis-server command line after --")
    return guard(args.port, argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keepa-deals", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="replay a scenario on a virtual clock; JSON report on stdout")
    sim.add_argument("scenario", help="scenario JSON file (see bench/scenarios/)")
    sim.add_argument("--policy", choices=(*POLICIES, "all"), default="governor")
    sim.add_argument("--unfiltered-feed", action="store_true",
                     help="the deal query without the viability rule's ranges (the stack's KEEPA_SCREEN_QUERY=0)")
    sim.set_defaults(func=_simulate)

    fake = sub.add_parser("fake-keepa", help="serve the embedded Keepa simulator over HTTP")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=0, help="0 picks a free port")
    fake.add_argument("--refill-per-minute", type=int, default=5)
    fake.add_argument("--max-tokens", type=int, default=None, help="default 60 x refill")
    fake.add_argument("--start-tokens", type=int, default=None, help="default: a full bucket")
    fake.add_argument("--minute-seconds", type=float, default=60.0, help="length of a Keepa minute")
    fake.add_argument("--seed", type=int, default=1)
    fake.set_defaults(func=_fake_keepa)

    sub.add_parser("governor", help="the governor process (queue governor, one thread)").set_defaults(func=_role)
    worker = sub.add_parser("worker", help="upsert, peek and commit actors")
    worker.add_argument("--threads", type=int, default=None, help="default 8 (actors.processes.WORKER_THREADS)")
    worker.set_defaults(func=_role)
    sub.add_parser("scheduler", help="periodic triggers (exactly one)").set_defaults(func=_role)
    sub.add_parser("metrics", help="serve /metrics on METRICS_HOST:METRICS_PORT").set_defaults(func=_metrics)
    status = sub.add_parser("status", help="balance, recharge, why each class waits, deals")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    replay = sub.add_parser("replay-set-aside", help="list the products set aside after malformed answers "
                            "and put them back in line")
    replay.add_argument("asins", nargs="*", help="only these ASINs (default: all set aside)")
    replay.add_argument("--list", action="store_true", help="list them, change nothing")
    replay.set_defaults(func=_replay_set_aside)
    sup = sub.add_parser("supervise", help="run a role and restart it if it dies unasked")
    sup.add_argument("role", nargs=argparse.REMAINDER)
    sup.set_defaults(func=_supervise)
    run = sub.add_parser("up", help="the whole stack on the embedded default (what make run runs)")
    run.add_argument("--progress-seconds", type=float, default=PROGRESS_S,
                     help="seconds between progress lines (deals, tokens, pending, why the first waits); 0: none")
    run.set_defaults(func=_up)
    guard = sub.add_parser("redis-guard", help="(used by up) run redis-server, stop it after the stack's clients")
    guard.add_argument("--port", type=int, required=True)
    guard.add_argument("redis_argv", nargs=argparse.REMAINDER)
    guard.set_defaults(func=_redis_guard)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in ("up", "redis-guard"):  # started by `up`: end with it (keepa_deals.lifeline)
        from keepa_deals.lifeline import follow_up

        follow_up()
    try:
        return args.func(args)
    except KeepaDealsError as exc:
        print(f"keepa-deals: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
