"""Out-of-band files: the signed/export URLs providers hand out, served without auth.

Lobstr CSV exports, Skop documents, Bulkgrid screenshots, Spidra crawl page content and Pulse
large results all live under `/_files/{provider}/{token}/{name}`. Content is generated on
first read from the job's seed. Single-use files answer 410 after their first download, and
every file of a job answers 410 once that job has expired. A request that brings a credential
(`authorization`, `x-api-key`) is booked as `keyed_downloads`: a storage host must never
see the key, and tests prove it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.sandbox.books import Books

FILES_PREFIX = "/_files"
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


class FileJob(Protocol):
    """What the store asks of the job a file belongs to (the sandbox's Job is one); stated
    here so that the store, which the sandbox core builds, does not import the core."""

    provider: str

    def digest(self, *labels: object) -> bytes: ...

    def expired(self, now: float) -> bool: ...


@dataclass(slots=True)
class StoredFile:
    provider: str
    media_type: str
    factory: Callable[[], bytes]
    single_use: bool = False
    job: FileJob | None = None
    used: bool = field(default=False)


class FileStore:
    def __init__(self, books: Books, clock: Callable[[], float]) -> None:
        self._books = books
        self._clock = clock
        self._files: dict[tuple[str, str], StoredFile] = {}

    def url(
        self,
        origin: str,
        *,
        job: FileJob,
        label: str,
        name: str,
        media_type: str,
        factory: Callable[[], bytes],
        single_use: bool = False,
    ) -> str:
        """The absolute URL of a job's file `label`; the same URL every time it is asked."""
        token = job.digest("file", label).hex()[:32]
        key = (job.provider, token)
        if key not in self._files:
            self._files[key] = StoredFile(job.provider, media_type, factory, single_use, job)
        return f"{origin}{FILES_PREFIX}/{job.provider}/{token}/{name}"

    def route(self) -> Route:
        return Route(FILES_PREFIX + "/{provider}/{token}/{name:path}", self._serve, methods=["GET"])

    async def _serve(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        stored = self._files.get((provider, request.path_params["token"]))
        books = self._books.providers.get(provider)
        if books is not None:
            books.downloads += 1
            if CREDENTIAL_HEADERS & {name.lower() for name in request.headers}:
                books.keyed_downloads += 1
        if stored is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        job = stored.job
        if job is not None and job.expired(self._clock()):
            return JSONResponse({"error": "gone", "message": "expired"}, status_code=410)
        if stored.single_use and stored.used:
            return JSONResponse({"error": "gone", "message": "already downloaded"}, 410)
        stored.used = True
        return Response(stored.factory(), media_type=stored.media_type)
