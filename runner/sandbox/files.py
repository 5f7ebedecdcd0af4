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
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from runner.sandbox.core import Job, Sandbox

FILES_PREFIX = "/_files"
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})


@dataclass(slots=True)
class StoredFile:
    provider: str
    media_type: str
    factory: Callable[[], bytes]
    single_use: bool = False
    job: Job | None = None
    used: bool = field(default=False)


class FileStore:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._files: dict[tuple[str, str], StoredFile] = {}

    def url(
        self,
        origin: str,
        *,
        job: Job,
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
        books = self._sandbox.books.providers.get(provider)
        if books is not None:
            books.downloads += 1
            if CREDENTIAL_HEADERS & {name.lower() for name in request.headers}:
                books.keyed_downloads += 1
        if stored is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        job = stored.job
        if job is not None:
            from runner.sandbox.core import Phase

            if job.view(self._sandbox.clock()).phase is Phase.EXPIRED:
                return JSONResponse({"error": "gone", "message": "expired"}, status_code=410)
        if stored.single_use and stored.used:
            return JSONResponse({"error": "gone", "message": "already downloaded"}, 410)
        stored.used = True
        return Response(stored.factory(), media_type=stored.media_type)
