"""Lobstr.io under /v1: squids, tasks, runs, stats, results, CSV export (docs/providers/lobstr.md).

Auth: `Authorization: Token <key>`. Errors: `{"error", "type", "code"}`. Statuses are
lowercase: pending → running → uploading → done (export_done), paused with a done_reason,
aborted, error. One active run per squid (400 RunInProgress). Per-path limits when
`endpoint_limits` is on: /squids 120/min, /tasks 90/min, /runtasks 90/min, /runs 120/min,
/results 2/s (docs/providers/lobstr.md#limits), with `X-RateLimit-*` headers on 429.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from runner.sandbox import determinism as det
from runner.sandbox.core import (
    Job,
    Phase,
    ProviderApi,
    View,
    int_param,
    item_failed,
    json_response,
    origin_of,
    read_json,
)
from runner.sandbox.limits import retry_after_header
from runner.sandbox.scenario import RateLimit

ENDPOINT_LIMITS: dict[str, RateLimit] = {
    "squids": RateLimit(120, 60.0),
    "tasks": RateLimit(90, 60.0),
    "runtasks": RateLimit(90, 60.0),
    "runs": RateLimit(120, 60.0),
    "results": RateLimit(2, 1.0),
}
MAX_PAGE_SIZE = 100
UPLOAD_SHARE = 0.15  # the last part of a run's work is the export ("uploading")


class LobstrApi(ProviderApi):
    name = "lobstr"
    prefix = "/v1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.squids: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}  # task id → task

    def api_key(self, headers: Headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:6].lower() == "token ":
            return auth[6:].strip() or None
        return None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        return json_response({"error": message, "type": code or "APIError", "code": status}, status)

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid token.", "NotAuthenticated")

    def no_credits(self) -> Response:  # Lobstr sends no 402 (docs/providers/lobstr.md#errors)
        return self.error(400, "Not enough balance to start this run.", "NotEnoughBalance")

    def busy(self, cap: int) -> Response:
        # docs/providers/lobstr.md#limits: a per-plan quota, refused with a 400.
        return self.error(
            400, "Concurrency limit exceeded for your plan.", "ConcurrencyLimitExceeded"
        )

    def throttled(self, retry_after: float, limit: RateLimit, remaining: int) -> Response:
        seconds = retry_after_header(retry_after)
        response = self.error(
            429, f"Rate limit exceeded. Try again in {seconds} seconds.", "RateLimitExceeded"
        )
        response.headers.update(
            {
                "Retry-After": seconds,
                "X-RateLimit-Limit": str(limit.requests),
                "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(int(time.time() + retry_after) + 1),
            }
        )
        return response

    def server_error(self, status: int) -> Response:
        return self.error(status, "Something went wrong.", "SomethingWentWrong")

    def endpoint_limit(self, template: str) -> tuple[str, RateLimit] | None:
        if not self.knobs.endpoint_limits:
            return None
        group = template.strip("/").split("/")[0]
        limit = ENDPOINT_LIMITS.get(group)
        return (group, limit) if limit else None

    def routes(self) -> list[BaseRoute]:
        return [
            self.route("POST", "/squids", self.create_squid),
            self.route("GET", "/squids/{squid}", self.get_squid),
            self.route("POST", "/squids/{squid}", self.update_squid),
            self.route("POST", "/tasks", self.add_tasks),
            self.route("POST", "/runs", self.start_run, submit=True),
            self.route("GET", "/runs", self.list_runs),
            self.route("GET", "/runs/{run}", self.get_run),
            self.route("GET", "/runs/{run}/stats", self.get_stats),
            self.route("POST", "/runs/{run}/abort", self.abort_run),
            self.route("GET", "/runs/{run}/download", self.download),
            self.route("GET", "/runtasks", self.list_runtasks),
            self.route("GET", "/results", self.list_results),
        ]

    # -- squids and tasks -------------------------------------------------------------------

    async def create_squid(self, request: Request) -> Response:
        body, problem = await read_json(request)
        if problem or not isinstance(body, dict):
            return self.error(400, problem or "Body must be an object", "ValidationError")
        crawler = body.get("crawler")
        if not isinstance(crawler, str) or not crawler:
            return self.error(400, "crawler is required", "ParamsNeeded")
        _, labels = self.sandbox.labels(self.name, "squid", body)
        squid_id = det.hex32_from(det.derive(*labels, "id"))
        squid = {
            "id": squid_id,
            "object": "squid",
            "name": str(body.get("name") or f"{crawler} squid"),
            "crawler": crawler,
            "params": {},
            "concurrency": 1,
            "is_active": True,
            "is_ready": False,
            "created_at": det.iso(det.rng(*labels).uniform(0, 3600), z=False),
            "last_run": None,
            "total_tasks": 0,
        }
        self.squids[squid_id] = squid
        return json_response(squid)

    async def get_squid(self, request: Request) -> Response:
        squid = self.squids.get(request.path_params["squid"])
        if squid is None:
            return self.error(404, "Squid not found", "SquidDoesNotExistException")
        return json_response(squid)

    async def update_squid(self, request: Request) -> Response:
        squid = self.squids.get(request.path_params["squid"])
        if squid is None:
            return self.error(404, "Squid not found", "SquidDoesNotExistException")
        body, problem = await read_json(request)
        if problem or not isinstance(body, dict):
            return self.error(400, problem or "Body must be an object", "ValidationError")
        if "params" in body:
            if not isinstance(body["params"], dict):
                return self.error(400, "params must be an object", "ParamsNeeded")
            squid["params"] = body["params"]
            squid["is_ready"] = True
        for key in ("name", "concurrency", "is_active", "to_complete", "export_unique_results"):
            if key in body:
                squid[key] = body[key]
        return json_response(squid)

    async def add_tasks(self, request: Request) -> Response:
        body, problem = await read_json(request)
        if problem or not isinstance(body, dict):
            return self.error(400, problem or "Body must be an object", "ValidationError")
        squid = self.squids.get(str(body.get("squid")))
        if squid is None:
            return self.error(404, "Squid not found", "SquidDoesNotExistException")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            return self.error(400, "tasks must be a non-empty list of objects", "TaskNotValidError")
        created, duplicated = [], 0
        for params in tasks:
            task_id = det.hex32_from(det.derive(squid["id"], det.body_key(params)))
            if task_id in self.tasks:
                duplicated += 1
                continue
            task = {
                "id": task_id,
                "object": "task",
                "squid": squid["id"],
                "is_active": True,
                "params": params,
                "created_at": squid["created_at"],
                "status": None,
            }
            self.tasks[task_id] = task
            created.append(task)
        squid["total_tasks"] += len(created)
        return json_response({"tasks": created, "duplicated_count": duplicated})

    def _squid_tasks(self, squid_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t["squid"] == squid_id and t["is_active"]]

    # -- runs -------------------------------------------------------------------------------

    async def start_run(self, request: Request) -> Response:
        body, problem = await read_json(request)
        if problem or not isinstance(body, dict):
            return self.error(400, problem or "Body must be an object", "ValidationError")
        squid = self.squids.get(str(body.get("squid")))
        if squid is None:
            return self.error(404, "Squid not found", "SquidDoesNotExistException")
        if not squid["is_ready"]:
            return self.error(
                400, "Squid is not ready: set its required params first", "SquidNotReady"
            )
        now = self.sandbox.clock()
        for job in self.sandbox.jobs[self.name].values():
            if job.extra["squid"] == squid["id"] and not _done(job, job.view(now)):
                return self.error(400, "A run is already active for this squid", "RunInProgress")
        tasks = self._squid_tasks(squid["id"])
        job = self.sandbox.create_job(self.name, "run", body, det.hex32_from)
        job.extra["squid"] = squid["id"]
        job.extra["crawler"] = squid["crawler"]
        job.extra["tasks"] = [t["id"] for t in tasks]
        job.extra["task_params"] = [t["params"] for t in tasks]
        job.n_results = job.n_results * len(tasks)
        squid["last_run"] = job.id
        return json_response(run_object(job, job.view(now)))

    def _job(self, request: Request) -> Job | None:
        return self.sandbox.job(self.name, request.path_params["run"])

    def _missing(self) -> Response:
        return self.error(404, "Run not found", "RunDoesNotExist")

    async def list_runs(self, request: Request) -> Response:
        q = request.query_params
        page = int_param(q.get("page"), 1, minimum=1)
        limit = int_param(q.get("limit"), 50, minimum=1)
        if page is None or limit is None or limit > MAX_PAGE_SIZE:
            return self.error(
                400, "page and limit must be positive (limit <= 100)", "ValidationError"
            )
        now = self.sandbox.clock()
        runs = [
            # the real clock in listings, so "started since my request" can be told
            {**run_object(job, job.view(now)), "created_at": job.listed_iso(z=False)}
            for job in self.sandbox.jobs[self.name].values()
            if not q.get("squid") or job.extra["squid"] == q["squid"]
        ]
        total = len(runs)
        return json_response(
            {
                "data": runs[(page - 1) * limit : page * limit],
                "page": page,
                "limit": limit,
                "total_results": total,
                "total_pages": (total + limit - 1) // limit,
            }
        )

    async def get_run(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self._missing()
        return json_response(run_object(job, job.view(self.sandbox.clock())))

    async def get_stats(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self._missing()
        view = job.view(self.sandbox.clock())
        total_tasks = len(job.extra["tasks"])
        fraction = _collected(job, view)
        tasks_done = total_tasks if _done(job, view) else int(total_tasks * fraction)
        return json_response(
            {
                "percent_done": f"{round(fraction * 100)}%",
                "total_tasks": total_tasks,
                "total_tasks_done": tasks_done,
                "total_tasks_left": total_tasks - tasks_done,
                "total_results": _results_done(job, view),
                "duration": round(_duration(job, view), 4),
                "eta": "0:00:00" if _done(job, view) else "∞",
                "current_task": None
                if _done(job, view) or not total_tasks
                else job.extra["tasks"][min(tasks_done, total_tasks - 1)],
                "is_done": _done(job, view),
            }
        )

    async def abort_run(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self._missing()
        now = self.sandbox.clock()
        if job.cancelled_at is not None or not job.cancel(now):
            return self.error(404, "Run not found or already completed", "RunDoesNotExist")
        return json_response(run_object(job, job.view(now)))

    async def download(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self._missing()
        view = job.view(self.sandbox.clock())
        if not _export_done(job, view):
            return self.error(404, "Run not found or export not ready", "RunDoesNotExist")
        rows = [result_row(job, i) for i in range(_results_done(job, view))]
        url = self.sandbox.files.url(
            origin_of(request),
            job=job,
            label="export.csv",
            name=f"{job.id}.csv",
            media_type="text/csv; charset=utf-8",
            factory=lambda: to_csv(rows),
        )
        return json_response({"s3": url})

    async def list_runtasks(self, request: Request) -> Response:
        job = self.sandbox.job(self.name, request.query_params.get("run", ""))
        if job is None:
            return self._missing()
        view = job.view(self.sandbox.clock())
        data = []
        for index, task_id in enumerate(job.extra["tasks"]):
            failed = job.outcome is Phase.PARTIAL and item_failed(
                job, index, len(job.extra["tasks"])
            )
            status = (
                "aborted"
                if view.phase is Phase.CANCELLED
                else ("error" if failed else "completed")
                if _done(job, view)
                else "pending"
            )
            data.append(
                {
                    "id": task_id,
                    "status": status,
                    "done_reason": "run_aborted" if status == "aborted" else None,
                }
            )
        return json_response({"data": data, "page": 1, "total_pages": 1})

    async def list_results(self, request: Request) -> Response:
        q = request.query_params
        given = [k for k in ("squid", "run", "task") if q.get(k)]
        if len(given) != 1:
            return self.error(400, "Provide exactly one of squid, run or task", "ValidationError")
        page = int_param(q.get("page"), 1, minimum=1)
        size = int_param(q.get("page_size") or q.get("limit"), 100, minimum=1)
        if page is None or size is None or size > MAX_PAGE_SIZE:
            return self.error(
                400, "page and page_size must be positive (<= 100)", "ValidationError"
            )
        now = self.sandbox.clock()
        if given[0] == "run":
            job = self.sandbox.job(self.name, q["run"])
            if job is None:
                return self._missing()
            jobs = [job]
        elif given[0] == "squid":
            jobs = [
                j for j in self.sandbox.jobs[self.name].values() if j.extra["squid"] == q["squid"]
            ]
        else:
            jobs = [
                j for j in self.sandbox.jobs[self.name].values() if q["task"] in j.extra["tasks"]
            ]
        rows = [result_row(j, i) for j in jobs for i in range(_results_done(j, j.view(now)))]
        total = len(rows)
        pages = (total + size - 1) // size
        start = (page - 1) * size
        chunk = rows[start : start + size]
        base = f"{origin_of(request)}/v1/results?{given[0]}={q[given[0]]}&page_size={size}&page="
        return json_response(
            {
                "total_results": total,
                "limit": size,
                "page": page,
                "total_pages": pages,
                "result_from": start + 1 if chunk else 0,
                "result_to": start + len(chunk),
                "data": chunk,
                "next": f"{base}{page + 1}" if page < pages else None,
                "previous": f"{base}{page - 1}" if page > 1 else None,
            }
        )


# -- the run's life, as Lobstr shows it --------------------------------------------------------


def _upload_start(job: Job) -> float:
    return job.queue_s + job.run_s * (1 - UPLOAD_SHARE)


def _collected(job: Job, view: View) -> float:
    """Fraction of the results collected (collection ends when uploading starts)."""
    if view.phase is Phase.FAILED:
        return 0.5
    collect_end = _upload_start(job)
    e = view.elapsed if view.phase is not Phase.CANCELLED else job.cancelled_at or 0.0
    if e <= job.queue_s:
        return 0.0
    return min((e - job.queue_s) / max(collect_end - job.queue_s, 1e-9), 1.0)


def _results_done(job: Job, view: View) -> int:
    return int(job.n_results * _collected(job, view))


def _abort_upload_end(job: Job) -> float:
    return (job.cancelled_at or 0.0) + job.run_s * UPLOAD_SHARE


def _done(job: Job, view: View) -> bool:
    """Lobstr's `is_done`: true once collection stopped (also while an abort uploads)."""
    if view.phase is Phase.CANCELLED:
        return True
    return view.phase.terminal or view.elapsed >= _upload_start(job)


def _export_done(job: Job, view: View) -> bool:
    if view.phase is Phase.CANCELLED:
        return view.elapsed >= _abort_upload_end(job)
    return view.phase in (Phase.SUCCEEDED, Phase.PARTIAL)


def _paused_window(job: Job) -> tuple[float, float]:
    """Partial runs pause for a while mid-collection (done_reason no_account_available)."""
    start = job.queue_s + job.run_s * 0.3
    return start, start + job.run_s * 0.2


def _status(job: Job, view: View) -> tuple[str, str | None]:
    phase = view.phase
    if phase is Phase.CANCELLED:
        if view.elapsed < _abort_upload_end(job):
            return "uploading", "aborted"
        return "aborted", "aborted"
    if phase is Phase.QUEUED:
        return "pending", None
    if phase is Phase.RUNNING:
        if job.outcome is Phase.PARTIAL:
            start, end = _paused_window(job)
            if start <= view.elapsed < end:
                return "paused", "no_account_available"
        if view.elapsed >= _upload_start(job):
            return "uploading", None
        return "running", None
    if phase is Phase.FAILED:
        return "error", "website_inaccessible"
    if phase is Phase.PARTIAL:
        return "done", "limit_exceeded"
    return "done", "tasks_done"


def _duration(job: Job, view: View) -> float:
    e = view.elapsed
    if view.phase is Phase.CANCELLED:
        e = _abort_upload_end(job) if view.elapsed >= _abort_upload_end(job) else e
    elif view.phase.terminal:
        e = job.total_s
    return max(e - job.queue_s, 0.0)


def run_object(job: Job, view: View) -> dict[str, Any]:
    status, reason = _status(job, view)
    exported = _export_done(job, view)
    started = None if view.phase is Phase.QUEUED else job.started_iso(z=False)
    ended = None
    if status in ("done", "error", "aborted"):
        ended = job.finished_iso(view, z=False)
    results = _results_done(job, view)
    return {
        "id": job.id,
        "object": "run",
        "squid": job.extra["squid"],
        "crawler_id": det.hex32_from(det.derive("crawler", job.extra["crawler"])),
        "status": status,
        "is_done": _done(job, view),
        "created_at": job.created_iso(z=False),
        "started_at": started,
        "ended_at": ended,
        "duration": round(_duration(job, view), 4),
        "credit_used": float(results),
        "origin": "user",
        "total_results": results,
        "total_unique_results": results,
        "export_done": exported,
        "export_time": job.at(job.total_s, z=False) if exported else None,
        "export_count": 1 if exported else 0,
        "done_reason": reason,
        "done_reason_desc": None,
        "next_launch_at": None,
        "shared": False,
        "force_launch": False,
    }


def result_row(job: Job, index: int) -> dict[str, Any]:
    r = job.rng("row", index)
    params = job.extra["task_params"]
    task = params[index % len(params)] if params else {}
    return {
        "id": det.hex32_from(job.digest("row", index)),
        "run": job.id,
        "task": job.extra["tasks"][index % len(params)] if params else None,
        "url": task.get("url"),
        "name": det.words(r, 2).title(),
        "price": round(r.uniform(1, 900), 2),
        "rating": round(r.uniform(1, 5), 1),
        "description": det.text_of_size(r, min(job.knobs.result_bytes, 400)).strip(),
        "scraped_at": job.at(job.queue_s + job.run_s * r.random() * (1 - UPLOAD_SHARE), z=False),
    }


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["id"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
