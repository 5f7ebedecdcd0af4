"""`runner plan M [--json] [--all]`: the expanded jobs, each provider's effective limits,
and an estimate of the requests and the shortest wall time those limits allow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.batch import reuse
from runner.batch.budget import budget_dict, describe, require_fit
from runner.batch.usable import require_manifest
from runner.commands.run import add_out, add_reuse, reuse_policy
from runner.durations import format_duration
from runner.estimate import PlanEstimate, assumptions, estimate_plan
from runner.manifest.loader import load_manifest
from runner.manifest.settings import describe_poll
from runner.plan import Plan, ProviderSettings, Rate
from runner.store.jsonio import canonical_json

HELP = "show the expanded jobs, the effective limits and a request / time estimate"
SHOWN_JOBS = 20


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, metavar="MANIFEST")
    parser.add_argument("--json", action="store_true", help="canonical JSON on stdout")
    parser.add_argument(
        "--all", action="store_true", help=f"list every job (default: the first {SHOWN_JOBS})"
    )
    add_out(
        parser, "results root whose earlier batches `runner run` would reuse (default: results)"
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="show what `runner run --sandbox` would reuse (sandbox results only count there)",
    )
    add_reuse(parser)
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="accept a plan over its budget's job caps (the jobs past a cap are skipped)",
    )


def execute(args: argparse.Namespace) -> int:
    require_manifest(args.manifest)
    # Planning sends nothing, so unset key variables only earn a notice.
    loaded = load_manifest(args.manifest, sandbox_keys=True)
    for notice in loaded.notices:
        print(notice, file=sys.stderr)
    policy = reuse_policy(args)
    policy.check(loaded.plan)
    choices = reuse.choose(loaded.plan, args.out, policy, sandboxed=args.sandbox)
    sent = reuse.sent_plan(loaded.plan, choices)  # what `runner run` would send
    estimate = estimate_plan(sent)
    shown = None if args.all else SHOWN_JOBS
    if args.json:
        document = plan_dict(loaded.plan, estimate)
        document["reuse"] = [choice.as_dict() for choice in choices]
        sys.stdout.buffer.write(canonical_json(document))
    else:
        sys.stdout.write(render(loaded.plan, estimate, shown))
        sys.stdout.write(render_reuse(choices, args.out / loaded.plan.name, shown))
        caps = describe(sent)
        if caps:
            sys.stdout.write("\nbudget (jobs planned against each cap)\n")
            sys.stdout.write("".join(f"{line}\n" for line in caps))
    sys.stdout.flush()
    require_fit(sent, allow_partial=args.allow_partial)  # over a cap: exit 2
    return 0


# -- JSON ----------------------------------------------------------------------------------------


def _rate(rate: Rate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    return {"rate": rate.rate, "per_seconds": rate.per, "burst": rate.burst}


def provider_dict(settings: ProviderSettings, jobs: int) -> dict[str, Any]:
    limits = settings.limits
    return {
        "base_url": settings.base_url,
        "api_key_var": settings.api_key_var,
        "jobs": jobs,
        "limits": {
            "requests": _rate(limits.requests),
            "endpoints": {name: _rate(rate) for name, rate in sorted(limits.endpoints.items())},
            "in_flight": limits.in_flight,
            # where each came from: declared (manifest), published (provider docs), learned
            "origin": limits.origins(),
        },
        "poll": {
            "initial_seconds": settings.poll.initial,
            "max_seconds": settings.poll.max,
            "multiplier": settings.poll.multiplier,
        },
        "timeout_seconds": settings.timeout,
        "on_interrupt": settings.on_interrupt,
        "on_timeout": settings.on_timeout,
        "max_paused_seconds": settings.max_paused,
    }


def plan_dict(plan: Plan, estimate: PlanEstimate) -> dict[str, Any]:
    counts = {p.provider: p.jobs for p in estimate.providers}
    return {
        "name": plan.name,
        "manifest": str(plan.source),
        "manifest_sha256": plan.manifest_sha256,
        "jobs": [
            {"id": j.id, "provider": j.provider, "type": j.type, "tags": list(j.tags)}
            for j in plan.jobs
        ],
        "providers": {
            name: provider_dict(s, counts.get(name, 0)) for name, s in plan.providers.items()
        },
        "estimate": estimate.as_dict(),
        "budget": budget_dict(plan),
    }


# -- the human table -----------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _show_rate(rate: Rate | None) -> str:
    if rate is None:
        return "-"
    burst = f" burst {rate.burst}" if rate.burst > 1 else ""
    return f"{rate.rate:g}/{format_duration(rate.per)}{burst}"


def _with_origin(settings: ProviderSettings, key: str, shown: str) -> str:
    return shown if shown == "-" else f"{shown} {settings.limits.origin_of(key)}"


def _seconds(value: float) -> str:
    return format_duration(value) if value > 0 else "-"


def render(plan: Plan, estimate: PlanEstimate, shown: int | None) -> str:
    total = len(plan.jobs)
    out = [
        f"plan {plan.name} ({plan.source}): {total:,} job{'s' if total != 1 else ''}, "
        f"{len(plan.providers)} provider{'s' if len(plan.providers) != 1 else ''}\n"
    ]
    listed = plan.jobs if shown is None else plan.jobs[:shown]
    more = total - len(listed)
    heading = "jobs" if not more else f"jobs (first {len(listed)} of {total:,}; --all lists all)"
    rows = [["#", "id", "provider", "type", "tags"]]
    rows += [[str(j.index + 1), j.id, j.provider, j.type, ",".join(j.tags) or "-"] for j in listed]
    out += ["\n", heading + "\n", table(rows)]
    if more:
        out.append(f"  ... and {more:,} more\n")
    rows = [["provider", "requests", "submit", "status", "results", "download", "in_flight"]]
    learned = False
    for name, s in plan.providers.items():
        ends = s.limits.endpoints
        rows.append(
            [
                name,
                _with_origin(s, "requests", _show_rate(s.limits.requests)),
                *(
                    _with_origin(s, c, _show_rate(ends.get(c)))
                    for c in ("submit", "status", "results", "download")
                ),
                _with_origin(s, "in_flight", str(s.limits.in_flight or "-")),
            ]
        )
        learned = learned or "learned" in s.limits.origins().values()
    out += ["\nlimits (per provider; rate/window, and where each comes from)\n", table(rows)]
    out.append(
        "  declared: the manifest's, never exceeded; published: the provider's documented "
        "number, never exceeded\n"
    )
    if learned:
        out.append(
            "  learned: no published number; runner starts here, raises it while the provider "
            "accepts and lowers it on its 429s and concurrency errors\n"
        )
    rows = [["provider", "poll", "timeout", "on_interrupt", "on_timeout", "base_url"]]
    for name, s in plan.providers.items():
        rows.append(
            [
                name,
                describe_poll(s.poll),
                format_duration(s.timeout),
                s.on_interrupt,
                s.on_timeout,
                s.base_url,
            ]
        )
    out += ["\nsettings\n", table(rows)]
    rows = [
        [
            "provider",
            "jobs",
            "submits",
            "polls min/exp",
            "results",
            "requests min/exp",
            "shortest: limits/exp",
            "bound",
        ]
    ]
    for p in estimate.providers:
        rows.append(
            [
                p.provider,
                f"{p.jobs:,}",
                f"{p.submits:,}",
                f"{p.polls_min:,}/{p.polls_expected:,}",
                f"{p.results:,}",
                f"{p.requests_min:,}/{p.requests_expected:,}",
                f"{_seconds(p.floor_seconds)}/{_seconds(p.expected_seconds)}",
                p.bound if p.jobs else "-",
            ]
        )
    rows.append(
        [
            "batch",
            f"{total:,}",
            f"{sum(p.submits for p in estimate.providers):,}",
            "",
            "",
            f"{sum(p.requests_min for p in estimate.providers):,}/"
            f"{sum(p.requests_expected for p in estimate.providers):,}",
            f"{_seconds(estimate.floor_seconds)}/{_seconds(estimate.expected_seconds)}",
            "",
        ]
    )
    out += ["\nestimate\n", table(rows), "  assuming:\n"]
    out += [f"  - {line}\n" for line in assumptions()]
    return "".join(out)


def render_reuse(choices: Sequence[reuse.Choice], where: Path, shown: int | None) -> str:
    """What `runner run` would reuse from the batches in `where` and what it would send."""
    used = sum(c.reused for c in choices)
    out = [
        f"\nincremental: {used} of {len(choices)} jobs reused from earlier batches, "
        f"{len(choices) - used} to send (batches in {where})\n"
    ]
    if not used and all(not c.refused and not c.spec.max_age for c in choices):
        return "".join(out)  # nothing earlier to reuse: no line per job to read
    listed = choices if shown is None else choices[:shown]
    if listed:
        rows = [[c.spec.id, "reuse" if c.reused else "send", c.why] for c in listed]
        out.append(table(rows))
    if len(listed) < len(choices):
        out.append(f"  ... and {len(choices) - len(listed):,} more\n")
    return "".join(out)
