"""`runner sandbox`: serve all five providers' APIs locally until SIGINT/SIGTERM.

Prints one line per provider with its base URL (port 0 picks a free port), then serves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.errors import RunnerError, UsageError
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario, load_scenario, speed_up
from runner.sandbox.server import bind, origin_for, sandbox_base_urls, serve_forever

HELP = "serve the providers' APIs locally (deterministic; free rehearsals and tests)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and content (0)")
    parser.add_argument(
        "--scenario", type=Path, metavar="FILE", help="YAML knobs: durations, faults, limits"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="K",
        help="run K times faster: job durations and rate-limit windows divided by K (1)",
    )


def execute(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be between 0 and 65535")
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    if args.time_scale != 1.0:
        scenario = speed_up(scenario, args.time_scale)
    app = create_app(seed=args.seed, scenario=scenario)
    try:
        sock = bind(args.host, args.port)
    except RunnerError as exc:
        raise UsageError(str(exc)) from exc
    for name, url in sandbox_base_urls(origin_for(sock)).items():
        print(f"{name:<9} {url}")
    sys.stdout.flush()
    serve_forever(app, sock)
    return 0
