"""Provider settings from a manifest: API keys and base URLs from `${ENV}`, limits over the
published ones, and the job > provider > defaults > built-in precedence of poll and timeout.

Problems go to a `Reporter` (the manifest reader), located by a path into the document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from runner.durations import DURATION_PATTERN, format_duration, parse_duration
from runner.manifest.report import PathT
from runner.manifest.schemas import show
from runner.plan import (
    ENDPOINT_CLASSES,
    EndpointClass,
    Limits,
    Origin,
    Policy,
    PollPolicy,
    ProviderSettings,
    Rate,
    Secret,
)
from runner.providers.registry import PROVIDERS

DEFAULT_TIMEOUT = 1800.0
SANDBOX_KEY = "sandbox-key"

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_ENV = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_HTTP_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+\S*$")
_DURATION = re.compile(DURATION_PATTERN)


class Reporter(Protocol):
    """Where problems and notices go (the manifest reader locates them in the file)."""

    def add(self, path: PathT, message: str) -> None: ...

    def notice(self, path: PathT, message: str) -> None: ...

    def note(self, message: str) -> None:
        """A notice about no place in the file."""


# -- durations, poll and timeout -----------------------------------------------------------------


def duration(value: Any) -> float | None:
    """Seconds of a duration string; None for anything else (the schema reports it)."""
    if isinstance(value, str) and _DURATION.match(value):
        return parse_duration(value)
    return None


def check_positive(report: Reporter, path: PathT, value: Any) -> float | None:
    seconds = duration(value)
    if seconds is not None and seconds <= 0:
        report.add(path, f"{show(value)} must be longer than 0")
        return None
    return seconds


def check_poll(report: Reporter, path: PathT, poll: Any) -> None:
    if not isinstance(poll, dict):
        return
    initial = check_positive(report, (*path, "initial"), poll.get("initial"))
    ceiling = check_positive(report, (*path, "max"), poll.get("max"))
    if initial is not None and ceiling is not None and ceiling < initial:
        report.add(
            (*path, "max"),
            f"{show(poll['max'])} is shorter than initial ({poll['initial']})",
        )


def resolve_timeout(layers: Sequence[Any]) -> float:
    """The first layer that sets a timeout longer than 0 (job > provider > defaults > 30m)."""
    for layer in layers:
        seconds = duration(layer)
        if seconds:
            return seconds
    return DEFAULT_TIMEOUT


def resolve_poll(layers: Sequence[Any], fallback: PollPolicy) -> PollPolicy:
    """Field by field, the first layer that sets it (job > provider > defaults > built-in)."""

    def pick(name: str, default: float) -> float:
        for layer in layers:
            if isinstance(layer, dict):
                value = layer.get(name)
                if name == "multiplier":
                    if (
                        isinstance(value, int | float)
                        and not isinstance(value, bool)
                        and value >= 1
                    ):
                        return float(value)
                else:
                    seconds = duration(value)
                    if seconds:
                        return seconds
        return default

    initial = pick("initial", fallback.initial)
    ceiling = pick("max", fallback.max)
    return PollPolicy(initial, max(initial, ceiling), pick("multiplier", fallback.multiplier))


def describe_poll(poll: PollPolicy) -> str:
    return f"{format_duration(poll.initial)} x{poll.multiplier:g} up to {format_duration(poll.max)}"


def _policy(value: Any) -> Policy:
    return "cancel" if value == "cancel" else "detach"


# -- one provider --------------------------------------------------------------------------------


class SettingsReader:
    """Resolves the settings of each declared provider; collects every secret value seen."""

    def __init__(self, report: Reporter, env: Mapping[str, str], sandbox_keys: bool) -> None:
        self.report = report
        self.env = env
        self.sandbox_keys = sandbox_keys
        self.secrets: list[Secret] = []  # whole keys and the variables they were built from

    def provider(
        self, name: str, conf: dict[str, Any], defaults: dict[str, Any]
    ) -> ProviderSettings | None:
        """`providers.<name>` resolved, or None when its key or URL cannot be (reported)."""
        info = PROVIDERS[name]
        base = ("providers", name)
        key, key_var = self.api_key(name, conf.get("api_key"))
        base_url = self.base_url(name, conf.get("base_url"))
        check_poll(self.report, (*base, "poll"), conf.get("poll"))
        check_positive(self.report, (*base, "timeout"), conf.get("timeout"))
        check_positive(self.report, (*base, "max_paused"), conf.get("max_paused"))
        limits = self.limits(base, conf.get("limits"), info.default_limits)
        if key is None or base_url is None:
            return None
        return ProviderSettings(
            name=name,
            base_url=base_url,
            api_key=key,
            api_key_var=key_var,
            limits=limits,
            poll=resolve_poll([conf.get("poll"), defaults.get("poll")], info.default_poll),
            timeout=resolve_timeout([conf.get("timeout"), defaults.get("timeout")]),
            on_interrupt=_policy(conf.get("on_interrupt")),
            on_timeout=_policy(conf.get("on_timeout")),
            max_paused=duration(conf.get("max_paused")),
        )

    def _keep(self, secret: str) -> Secret:
        value = Secret(secret)
        if value and value not in self.secrets:
            self.secrets.append(value)
        return value

    def api_key(self, name: str, raw: Any) -> tuple[Secret | None, str | None]:
        """(the key, the variable it came from); never puts the value in a message."""
        path = ("providers", name, "api_key")
        conventional = PROVIDERS[name].api_key_env
        if not isinstance(raw, str) or not raw:
            return None, None  # the schema said what is wrong
        names = ENV_REF.findall(raw)
        if not names:
            bare = _BARE_ENV.match(raw)
            if bare:
                self.report.add(path, f"{raw!r} is not interpolated; write ${{{bare.group(1)}}}")
                return None, None
            if "${" in raw:  # e.g. '${KEY' or '${1KEY}': never send it as a literal key
                self.report.add(
                    path, f"malformed ${{...}} reference; write api_key: ${{{conventional}}}"
                )
                return None, None
            self.report.notice(
                path,
                "the key is written in the manifest; keep it in the environment: "
                f"api_key: ${{{conventional}}}",
            )
            return self._keep(raw), None
        missing = [var for var in names if not self.env.get(var)]
        if missing:
            if self.sandbox_keys:
                self.report.note(f"{missing[0]} is not set; using a sandbox key for {name}")
                return self._keep(SANDBOX_KEY), names[0]
            for var in missing:
                state = "is empty" if var in self.env else "is not set"
                self.report.add(path, f"environment variable {var} {state}")
            return None, names[0]
        # `Token ${KEY}`: the variable's value alone is as secret as the whole key.
        for var in names:
            self._keep(self.env[var])
        return self._keep(ENV_REF.sub(lambda m: self.env[m.group(1)], raw)), names[0]

    def base_url(self, name: str, raw: Any) -> str | None:
        default = PROVIDERS[name].default_base_url
        if raw is None:
            return default
        if not isinstance(raw, str):
            return None
        path = ("providers", name, "base_url")
        names = ENV_REF.findall(raw)
        missing = [var for var in names if not self.env.get(var)]
        if missing:
            if self.sandbox_keys:
                self.report.note(f"{missing[0]} is not set; using {default} for {name}")
                return default
            for var in missing:
                state = "is empty" if var in self.env else "is not set"
                self.report.add(path, f"environment variable {var} {state}")
            return None
        url = ENV_REF.sub(lambda m: self.env[m.group(1)], raw)
        if not _HTTP_URL.match(url):
            if names:
                self.report.add(path, f"{', '.join(names)} must hold an http(s) URL")
            return None  # without variables the schema reported it
        return url

    def limits(self, base: PathT, conf: Any, published: Limits) -> Limits:
        """The manifest's budgets over the published ones, one endpoint class at a time."""
        path = (*base, "limits")
        conf = conf if isinstance(conf, dict) else {}
        # Each value keeps where it came from: declared here, else the provider's own origin.
        origin: dict[str, Origin] = {k: published.origin_of(k) for k in published.origin}
        requests = self.rate((*path, "requests"), conf.get("requests"))
        if requests is not None:
            origin["requests"] = "declared"
        endpoints: dict[EndpointClass, Rate] = dict(published.endpoints)
        for endpoint in ENDPOINT_CLASSES:
            rate = self.rate((*path, endpoint), conf.get(endpoint))
            if rate is not None:
                endpoints[endpoint] = rate
                origin[endpoint] = "declared"
        in_flight = conf.get("in_flight")
        if not isinstance(in_flight, int) or isinstance(in_flight, bool) or in_flight < 1:
            in_flight = published.in_flight
        else:
            origin["in_flight"] = "declared"
        return Limits(
            requests=requests or published.requests,
            endpoints=endpoints,
            in_flight=in_flight,
            origin=origin,
        )

    def rate(self, path: PathT, conf: Any) -> Rate | None:
        if not isinstance(conf, dict):
            return None
        rate, burst = conf.get("rate"), conf.get("burst", 1)
        per = check_positive(self.report, (*path, "per"), conf.get("per", "1s"))
        valid_rate = isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0
        valid_burst = isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1
        if not (valid_rate and valid_burst and per):
            return None
        assert isinstance(rate, int | float)
        assert isinstance(burst, int)
        return Rate(float(rate), per, burst)
