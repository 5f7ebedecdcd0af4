"""A small fake `ProviderHttp` for adapter unit tests, on `httpx.MockTransport`.

It speaks HTTP through httpx like the real client (headers, query strings, JSON bodies) but
has no gate and no retries: a non-2xx reply raises the engine's `ProviderCallError`,
classified by the adapter under test as the engine's client does (`kind`, `code`,
`not_accepted`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runner.errors import ErrorKind, ProviderCallError
from runner.providers.base import Adapter, Reply, Request

BASE_URL = "https://api.test"
API_KEY = "sk-secret-key"
NOT_ACCEPTED = {
    ErrorKind.RATE_LIMITED,
    ErrorKind.BUSY,
    ErrorKind.AUTH,
    ErrorKind.CREDITS,
    ErrorKind.INVALID,
}

Handler = Callable[[httpx.Request], httpx.Response]


def call_error(
    adapter: Adapter, message: str, *, kind: ErrorKind, code: str | None, status_code: int
) -> ProviderCallError:
    """What the fake raises for a non-2xx reply: the engine's own error, `not_accepted`
    decided by kind as the engine's client does for an answered request."""
    return ProviderCallError(
        message,
        provider=adapter.info.name,
        job_id=None,
        kind=kind,
        status_code=status_code,
        code=code,
        not_accepted=kind in NOT_ACCEPTED,
    )


@dataclass
class Seen:
    """One request as it went over the wire."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    body: bytes
    endpoint: str | None = None  # the adapter's endpoint class (None: an out-of-band download)

    @property
    def path(self) -> str:
        return self.url.path

    @property
    def query(self) -> dict[str, str]:
        return dict(self.url.params)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(eq=False)  # hashable by identity: adapters keep per-client memory
class FakeHttp:
    adapter: Adapter
    handler: Handler
    base_url: str = BASE_URL
    api_key: str = API_KEY
    seen: list[Seen] = field(default_factory=list)
    downloads: list[tuple[str, bool, int | None]] = field(default_factory=list)
    keep: bool = True  # record what was seen (benchmarks turn it off: memory stays flat)
    job_notes: dict[str, Any] = field(default_factory=dict)  # ProviderHttp.note, as journaled

    @property
    def notes(self) -> Mapping[str, Any]:
        return self.job_notes

    def note(self, key: str, value: Any) -> None:
        self.job_notes[key] = value

    def __post_init__(self) -> None:
        self._client = httpx.AsyncClient(transport=httpx.MockTransport(self._record))
        self._endpoint: str | None = None

    def _record(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if self.keep:
            self.seen.append(
                Seen(request.method, request.url, request.headers, body, self._endpoint)
            )
        return self.handler(request)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def is_api_url(self, url: str) -> bool:
        """Under the provider's base URL: the only place a key may go (as the engine's)."""
        base = self.base_url.rstrip("/")
        return url == base or url.startswith(base + "/")

    def _raise(self, response: httpx.Response) -> None:
        reply = Reply(response.status_code, dict(response.headers), response.content)
        error = self.adapter.classify_error(reply)
        raise call_error(
            self.adapter,
            f"HTTP {response.status_code}: {error.message}",
            kind=error.kind,
            code=error.code,
            status_code=response.status_code,
        )

    async def send(self, request: Request) -> Reply:
        headers = {**self.adapter.auth_headers(self.api_key), **request.headers}
        self._endpoint = request.endpoint
        response = await self._client.request(
            request.method,
            self.url(request.path),
            params=dict(request.params) if request.params is not None else None,
            json=request.json,
            headers=headers,
        )
        if not 200 <= response.status_code < 300:
            self._raise(response)
        return Reply(response.status_code, dict(response.headers), response.content)

    async def download(
        self, url: str, dest: Path, *, send_key: bool, max_bytes: int | None = None
    ) -> int:
        self.downloads.append((url, send_key, max_bytes))
        # As the engine's client: the key and the gate's "download" class only on the API;
        # anything else is out of band (no key, no endpoint class).
        on_api = send_key and self.is_api_url(self.url(url))
        headers = self.adapter.auth_headers(self.api_key) if on_api else {}
        self._endpoint = "download" if on_api else None
        response = await self._client.get(self.url(url), headers=headers)
        if not 200 <= response.status_code < 300:
            self._raise(response)
        if max_bytes is not None and len(response.content) > max_bytes:
            raise call_error(
                self.adapter,
                f"larger than the {max_bytes}-byte cap",
                kind=ErrorKind.INVALID,
                code=None,
                status_code=200,
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(response.content)
        return len(response.content)

    def paths(self) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.seen]


def router(routes: Mapping[str, Any]) -> Handler:
    """A handler from `{"GET /path": response}`; a response is an httpx.Response, a JSON
    value (200), a list of those served in turn (the last repeats), or a callable taking
    the httpx.Request. Anything unrouted is a 404 the test will see."""
    served: dict[str, int] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        if key not in routes:
            return httpx.Response(404, json={"error": f"unrouted {key}"})
        answer = routes[key]
        if isinstance(answer, list) and answer and all(_is_step(a) for a in answer):
            index = served.get(key, 0)
            served[key] = index + 1
            answer = answer[min(index, len(answer) - 1)]
        if callable(answer) and not isinstance(answer, httpx.Response):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    return handle


def _is_step(value: Any) -> bool:
    return isinstance(value, httpx.Response) or callable(value)
