"""The results directory of one batch: atomic files, canonical JSON, SHA256SUMS, `latest`.

Layout (README.md#results-journal-and-logs): manifest.yaml, inputs/ (copies of its `each` files),
batch.json, journal.sqlite, log.jsonl, jobs/<id>/{job.json, status.json, result.json |
results.jsonl, files/}, SHA256SUMS (over manifest.yaml, inputs/ and jobs/).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runner import __version__
from runner.errors import NotABatchDirError, store_error
from runner.fingerprint import job_fingerprint
from runner.lifecycle import JobRecord, State
from runner.plan import Plan
from runner.remote import FetchReport, ResultSink
from runner.store.jsonio import (
    atomic_write,
    canonical_json,
    is_temp_name,
    json_line,
    temp_for,
    temp_name,
)
from runner.store.redaction import redact, redact_tree
from runner.store.sanitize import safe_name

MANIFEST = "manifest.yaml"
BATCH = "batch.json"
JOURNAL = "journal.sqlite"
LOG = "log.jsonl"
JOBS = "jobs"
ATTEMPTS = "attempts"  # attempts/<id>/<n>/: attempt n's jobs/<id>/, moved by `runner retry`
INPUTS = "inputs"  # the batch's copies of its `each` files (runner.batch.inputs)
SUMS = "SHA256SUMS"
LATEST = "latest"

RESULT = "result.json"
ITEMS = "results.jsonl"
STATUS = "status.json"
OUTCOME = "job.json"
FILES = "files"

_BATCH_ID_FORMAT = "%Y%m%dT%H%M%SZ"
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


GIVE_DIR = "give results/<name>/<batch-id>, results/<name>/latest or results/<name>"


def write_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` via a temporary name; the old file stays intact on failure."""
    try:
        atomic_write(path, data, fsync=fsync)
    except OSError as exc:
        raise store_error(path, exc) from exc


def format_batch_id(moment: datetime) -> str:
    """The batch id for a UTC start time: `20261122T030000Z`."""
    if moment.tzinfo is None:
        raise ValueError("batch start time must be timezone-aware")
    return moment.astimezone(UTC).strftime(_BATCH_ID_FORMAT)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- one job's directory ---------------------------------------------------------------------


class JobDir:
    """One job's results directory; implements `runner.providers.base.ResultSink`.

    Every file is written to a temporary name and renamed into place. `results.jsonl` is
    streamed to `STREAM` (a runner temporary) and renamed on `commit()` (called by
    `write_outcome` for a succeeded job), so a half-written stream never looks complete.
    Files placed at `file_path()` must be written atomically by the caller (download to
    `temp_for(path)` and rename, as `ProviderHttp.download` does) or through `write_file()`.
    """

    STREAM = temp_name(ITEMS)

    def __init__(self, path: Path, job_id: str, *, secrets: Sequence[str] = ()) -> None:
        self.path = path
        self.job_id = job_id
        self._secrets = tuple(secrets)
        self.files_dir = path / FILES
        self._taken: set[str] = set()
        self._stream: IO[bytes] | None = None
        self._items = 0
        self._files = 0
        if self.files_dir.is_dir():  # resume: never hand out a name already on disk
            for existing in self.files_dir.iterdir():
                self._taken.add(existing.name.casefold())
                self._files += not _is_debris(existing)

    # ResultSink -----------------------------------------------------------------------------

    def write_result(self, obj: Any) -> None:
        """The single result document, `result.json` (canonical JSON)."""
        write_atomic(self.path / RESULT, canonical_json(obj))

    def append_item(self, obj: Any) -> None:
        """One result item, appended to the `results.jsonl` stream in order."""
        part = self.path / self.STREAM
        try:
            if self._stream is None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._stream = part.open("wb")
            self._stream.write(json_line(obj))
        except OSError as exc:
            raise store_error(part, exc) from exc
        self._items += 1

    def file_path(self, name: str) -> Path:
        """A fresh path under `files/` for `name` (sanitized, numbered on collision); a
        secret inside `name` is redacted first, so no file name carries one."""
        try:
            self.files_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(self.files_dir, exc) from exc
        self._files += 1
        return self.files_dir / safe_name(redact(name, self._secrets), self._taken)

    # the engine's side ---------------------------------------------------------------------

    @staticmethod
    def temp_for(path: Path) -> Path:
        """A temporary name beside `path` to download into before renaming it into place;
        `BatchDir.finish` sweeps any such leftovers of an interrupted download."""
        return temp_for(path)

    def write_file(self, name: str, data: bytes) -> Path:
        """Write `data` atomically to a fresh `files/` path for `name`; returns the path."""
        path = self.file_path(name)
        write_atomic(path, data)
        return path

    def write_status(self, payload: Any) -> None:
        """The provider's final status payload, `status.json`, with every secret redacted
        in every string (keys too), as in job.json: a provider may echo the key."""
        write_atomic(self.path / STATUS, canonical_json(redact_tree(payload, self._secrets)))

    @property
    def items(self) -> int:
        """Result items appended since this JobDir was made (or reset)."""
        return self._items

    @property
    def files(self) -> int:
        """Files under `files/` (found on disk at open, plus those handed out since)."""
        return self._files

    def commit(self) -> None:
        """Close the item stream and rename the `STREAM` temporary to `results.jsonl`."""
        if self._stream is None:
            return
        part = self.path / self.STREAM
        stream, self._stream = self._stream, None
        try:
            stream.close()
            os.replace(part, self.path / ITEMS)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise store_error(self.path / ITEMS, exc) from exc

    close = commit

    def abort(self) -> None:
        """Drop a half-written item stream (the fetch failed): nothing masquerades as done."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with contextlib.suppress(OSError):  # its contents are being thrown away anyway
                stream.close()
        (self.path / self.STREAM).unlink(missing_ok=True)

    def reset(self) -> None:
        """Remove everything fetched so far, for a re-fetch after resume."""
        self.abort()
        if self.path.exists():
            shutil.rmtree(self.path)
        self._taken.clear()
        self._items = 0
        self._files = 0

    def write_outcome(self, record: JobRecord, report: FetchReport | None = None) -> None:
        """`job.json`: the normalized outcome. Commits the item stream of a succeeded job
        (and drops that of any other). Holds nothing that differs between two runs with the
        same answers: no remote ids, timestamps, timings or submit counts (a job sent again
        by `runner retry` names its attempt and where the earlier ones are)."""
        if record.state is State.SUCCEEDED:
            self.commit()
        else:
            self.abort()
        document = outcome_document(record, report, self)
        # What is on disk now, not what the adapter counted: job.json, the disk and
        # SHA256SUMS agree, and `verify` checks that they do.
        names = files_on_disk(self.files_dir)
        document["files"] = names
        document["counts"] = {**document["counts"], "files": len(names)}
        write_atomic(self.path / OUTCOME, canonical_json(redact_tree(document, self._secrets)))


def outcome_document(
    record: JobRecord, report: FetchReport | None, job_dir: JobDir | None = None
) -> dict[str, Any]:
    """The job.json content. Provider extras (`report.outcome`, e.g. cost) never override
    the normalized fields."""
    spec = record.spec
    items = report.items if report is not None else (job_dir.items if job_dir else 0)
    files = report.files if report is not None else (job_dir.files if job_dir else 0)
    document: dict[str, Any] = dict(report.outcome) if report is not None else {}
    document.update(
        {
            "id": spec.id,
            "provider": spec.provider,
            "type": spec.type,
            "tags": list(spec.tags),
            "state": record.state.value,
            "provider_status": record.raw_status,
            "reason": record.reason,
            "progress": record.progress,
            "partial": record.partial or (report.partial if report is not None else False),
            "results_ready": record.results_ready,
            "counts": {"items": items, "files": files},
            "notes": list(report.notes) if report is not None else [],
            "error": record.error,
            "fingerprint": job_fingerprint(spec),  # what it asked: runner.batch.reuse
        }
    )
    if record.attempt > 1:  # `runner retry`: where the earlier attempts' files are
        document["attempt"] = record.attempt
        document["previous_attempts"] = [
            f"{ATTEMPTS}/{spec.id}/{n}" for n in range(1, record.attempt)
        ]
    return document


# -- the batch directory ---------------------------------------------------------------------


class BatchDir:
    """`<root>/<manifest name>/<batch id>/`: made by `create`, found again by `open`."""

    def __init__(self, path: Path, *, secrets: Sequence[str] = ()) -> None:
        self.path = path
        self.batch_id = path.name
        self.secrets = tuple(s for s in secrets if s)  # redacted from job.json texts
        self.inputs: Mapping[
            str, Any
        ] = {}  # runner.batch.inputs' record of the copied `each` files
        # More batch.json fields from the layers above (a shard's K/N, the rate store).
        self.extra_info: dict[str, Any] = {}
        self._jobs: dict[str, JobDir] = {}

    @classmethod
    def create(
        cls,
        root: Path,
        plan: Plan,
        *,
        batch_id: str | None = None,
        now: datetime | None = None,
    ) -> BatchDir:
        """Make a new batch directory (suffix `-2`, `-3`... if the id is taken) and copy the
        manifest into it byte for byte."""
        base = batch_id or format_batch_id(now or datetime.now(UTC))
        parent = root / plan.name
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(parent, exc) from exc
        number = 1
        while True:
            candidate = parent / (base if number == 1 else f"{base}-{number}")
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                number += 1
            except OSError as exc:
                raise store_error(candidate, exc) from exc
        write_atomic(candidate / MANIFEST, plan.manifest_bytes)
        try:
            (candidate / JOBS).mkdir()
        except OSError as exc:
            raise store_error(candidate / JOBS, exc) from exc
        return cls(candidate, secrets=plan.secrets)

    @classmethod
    def open(cls, path: Path, *, secrets: Sequence[str] = ()) -> BatchDir:
        """An existing batch directory (for resume, status, verify)."""
        if not (path / MANIFEST).is_file():
            raise NotABatchDirError(f"{path} is not a batch directory (no {MANIFEST}); {GIVE_DIR}")
        return cls(path, secrets=secrets)

    @property
    def name(self) -> str:
        """The manifest name (the parent directory's name)."""
        return self.path.parent.name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def jobs_path(self) -> Path:
        return self.path / JOBS

    def job_dir(self, job_id: str) -> JobDir:
        """The (one, cached) JobDir of `job_id`."""
        job = self._jobs.get(job_id)
        if job is None:
            if not _JOB_ID.match(job_id):
                raise ValueError(f"job id {job_id!r} cannot name a directory")
            job = JobDir(self.path / JOBS / job_id, job_id, secrets=self.secrets)
            self._jobs[job_id] = job
        return job

    def finish(
        self,
        *,
        counts: Mapping[str, int],
        exit_code: int,
        started: datetime,
        ended: datetime,
        argv: list[str],
        secrets: Sequence[str],
        remote_ids: Mapping[str, str] | None = None,
        endpoints: Endpoints | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        """Seal the batch: SHA256SUMS over manifest.yaml, inputs/, jobs/ and attempts/,
        batch.json, then point `latest` here. `endpoints` default to those batch.json
        recorded when the batch was created."""
        for job in self._jobs.values():
            job.abort()  # an outcome was written for every finished job; the rest is debris
        _sweep(self.path / JOBS)
        write_atomic(self.path / SUMS, render_sums(self.path), fsync=True)
        if endpoints is None:
            endpoints = Endpoints.from_info(self.read_info())
        self.write_info(
            started=started,
            argv=argv,
            secrets=secrets,
            endpoints=endpoints,
            ended=ended,
            counts=counts,
            exit_code=exit_code,
            remote_ids=remote_ids,
            limits=limits,
        )
        point_latest(self.path)

    # -- batch.json ----------------------------------------------------------------------------

    def write_info(
        self,
        *,
        started: datetime,
        argv: Sequence[str],
        secrets: Sequence[str],
        endpoints: Endpoints,
        ended: datetime | None = None,
        counts: Mapping[str, int] | None = None,
        exit_code: int | None = None,
        remote_ids: Mapping[str, str] | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        """Write batch.json: at creation (so a killed batch still says where it ran; the
        end fields are null) and again when it is sealed. Fields written by others
        (`update_info`: git, reused) are kept."""
        document = {
            **(self.read_info() or {}),
            "batch_id": self.batch_id,
            "name": self.name,
            "manifest_sha256": hashlib.sha256(self.manifest_path.read_bytes()).hexdigest(),
            "runner_version": __version__,
            "python": sys.version.split()[0],
            "dependencies": dependency_versions(),
            "argv": [redact(arg, secrets) for arg in argv],
            "started": iso_utc(started),
            "ended": iso_utc(ended) if ended is not None else None,
            "counts": dict(counts) if counts is not None else None,
            "exit_code": int(exit_code) if exit_code is not None else None,
            "remote_ids": dict(remote_ids or {}),
            "inputs": dict(self.inputs),
            **self.extra_info,
            **endpoints.as_info(),
        }
        if limits is not None:  # per provider: each limit's origin and final value
            document["limits"] = dict(limits)
        write_atomic(self.path / BATCH, canonical_json(document), fsync=True)

    def update_info(self, fields: Mapping[str, Any]) -> None:
        """Add `fields` to batch.json, every other field kept (written at creation first)."""
        document = {**(self.read_info() or {}), **fields}
        write_atomic(self.path / BATCH, canonical_json(document), fsync=True)

    def read_info(self) -> dict[str, Any] | None:
        """batch.json as written, or None when there is none (a batch killed before it was
        written, or made by an older runner) or it cannot be read."""
        try:
            document = json.loads((self.path / BATCH).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a batch's providers were sent: each provider's base URL, and whether that was a
    sandbox (`sandbox`: its URL, `"in-process"` for one that lived only as long as its run,
    None for the providers' own hosts). Recorded in batch.json; resume and cancel use it."""

    urls: Mapping[str, str]
    sandbox: str | None = None

    def as_info(self) -> dict[str, Any]:
        return {"endpoints": dict(sorted(self.urls.items())), "sandbox": self.sandbox}

    @classmethod
    def from_info(cls, document: Mapping[str, Any] | None) -> Endpoints:
        """What batch.json recorded; empty `urls` when it recorded nothing."""
        urls = (document or {}).get("endpoints")
        sandbox = (document or {}).get("sandbox")
        if not isinstance(urls, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in urls.items()
        ):
            urls = {}
        return cls(dict(urls), sandbox if isinstance(sandbox, str) else None)


def no_journal(path: Path, exc: Exception) -> str:
    """The line for a batch directory whose journal cannot be read. A merged batch
    (`runner merge`) has none by design: the line names its shards, which do."""
    try:
        info = json.loads((path / BATCH).read_text("utf-8"))
    except (OSError, ValueError):
        info = None
    merged = info.get("merged_from") if isinstance(info, dict) else None
    if isinstance(merged, list) and merged:
        shards = ", ".join(str(entry.get("batch")) for entry in merged if isinstance(entry, dict))
        return (
            f"{path} is a merged batch (runner merge): it has no journal or log of its own; "
            f"ask its shards instead: {shards}"
        )
    return f"{path} has no readable journal: {exc}"


def point_latest(batch_path: Path) -> None:
    """Atomically make `<parent>/latest` a relative symlink to `batch_path`."""
    link = batch_path.parent / LATEST
    tmp = batch_path.parent / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(batch_path.name, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise store_error(link, exc) from exc


def dependency_versions() -> dict[str, str]:
    """Installed versions of runner's core dependencies (from its own metadata)."""
    try:
        requires = metadata.requires("runner") or []
    except metadata.PackageNotFoundError:
        return {}
    versions: dict[str, str] = {}
    for requirement in requires:
        if "extra ==" in requirement:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        if match is None:
            continue
        try:
            versions[match.group(0).lower()] = metadata.version(match.group(0))
        except metadata.PackageNotFoundError:
            versions[match.group(0).lower()] = "missing"
    return versions


# -- SHA256SUMS ------------------------------------------------------------------------------


def _is_debris(path: Path) -> bool:
    """A runner temporary left by an interrupted write (`write_atomic`, `JobDir.temp_for`,
    `JobDir.STREAM`): a hidden `.tmp` name, which `safe_name` never produces."""
    return is_temp_name(path.name)


def files_on_disk(files_dir: Path) -> list[str]:
    """Sorted posix paths, relative to `files_dir`, of the files in it (temporaries aside)."""
    return sorted(
        p.relative_to(files_dir).as_posix() for p in _walk(files_dir) if not _is_debris(p)
    )


def _sweep(jobs: Path) -> None:
    for path in _walk(jobs):
        if _is_debris(path):
            path.unlink(missing_ok=True)


def _walk(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for filename in filenames:
            yield Path(dirpath) / filename


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as SHA256SUMS writes it."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


_SUMMED = (INPUTS, JOBS, ATTEMPTS)  # the directories SHA256SUMS covers (and manifest.yaml)


def _listed(batch_path: Path) -> list[str]:
    """Relative posix paths of the files SHA256SUMS covers, sorted: manifest.yaml, every file
    under inputs/, jobs/ and attempts/ (what the batch ran from, and what it produced)."""
    found = [p for top in _SUMMED for p in _walk(batch_path / top)]
    if (batch_path / MANIFEST).is_file():
        found.append(batch_path / MANIFEST)
    return sorted(p.relative_to(batch_path).as_posix() for p in found)


def _covered(rel: str) -> bool:
    """A SHA256SUMS path names a file SHA256SUMS may cover (never one outside the batch)."""
    parts = rel.split("/")
    if parts == [MANIFEST]:
        return True
    return len(parts) > 1 and parts[0] in _SUMMED and not {"", ".", ".."} & set(parts)


def render_sums(batch_path: Path) -> bytes:
    """`sha256sum` format (`HEX  jobs/x/y`), one line per file covered (manifest.yaml,
    inputs/, jobs/, attempts/), sorted by path: `sha256sum -c SHA256SUMS` in the batch dir
    agrees."""
    lines = [f"{file_sha256(batch_path / rel)}  {rel}\n" for rel in _listed(batch_path)]
    return "".join(lines).encode("utf-8")


_SUM_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


def read_sums(path: Path) -> dict[str, str] | None:
    """The batch's SHA256SUMS as {relative path: sha256}, its malformed lines left out;
    None when it has none (a batch that has not finished, or is running)."""
    try:
        text = (path / SUMS).read_text("utf-8")
    except (OSError, ValueError):
        return None
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUM_LINE.match(line)
        if match is not None and _covered(match.group(2)):
            sums[match.group(2)] = match.group(1)
    return sums


def check(path: Path) -> tuple[int, list[str]]:
    """(files listed, problems) for the batch at `path`; NotABatchDirError if it is none."""
    BatchDir.open(path)
    sums = path / SUMS
    if not sums.is_file():
        return 0, [f"{SUMS}: missing (the batch has not finished)"]
    expected: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(sums.read_text("utf-8").splitlines(), start=1):
        match = _SUM_LINE.match(line)
        rel = match.group(2) if match else ""
        if match is None or not _covered(rel):
            problems.append(
                f"{SUMS}:{number}: not a line for a file of the batch "
                f"({MANIFEST}, {INPUTS}/, {JOBS}/ or {ATTEMPTS}/)"
            )
            continue
        expected[rel] = match.group(1)
    actual = set(_listed(path))
    for rel in sorted(expected.keys() | actual):
        if rel not in actual:
            problems.append(f"{rel}: missing")
        elif rel not in expected:
            problems.append(f"{rel}: not listed in {SUMS}")
        elif file_sha256(path / rel) != expected[rel]:
            problems.append(f"{rel}: changed (sha256 differs)")
    problems.extend(check_job_files(path))
    return len(expected), problems


def check_job_files(path: Path) -> list[str]:
    """Problems where a job.json's `files` list or `counts.files` disagrees with the files
    under that job's `files/` directory (a file lost before SHA256SUMS was written)."""
    problems: list[str] = []
    jobs = path / JOBS
    for job in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        outcome = job / OUTCOME
        if not outcome.is_file():
            continue
        where = outcome.relative_to(path).as_posix()
        try:
            document = json.loads(outcome.read_bytes())
        except ValueError:
            document = None
        listed = document.get("files") if isinstance(document, dict) else None
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            problems.append(f"{where}: not a JSON object with a files list")
            continue
        counts = document.get("counts")
        count = counts.get("files") if isinstance(counts, dict) else None
        if count != len(listed):
            noun = "file" if len(listed) == 1 else "files"
            problems.append(f"{where}: counts.files is {count}, but it lists {len(listed)} {noun}")
        actual = set(files_on_disk(job / FILES))
        prefix = (job / FILES).relative_to(path).as_posix()
        for name in sorted(set(listed) | actual):
            if name not in actual:
                problems.append(f"{prefix}/{name}: listed in {where}, not on disk")
            elif name not in listed:
                problems.append(f"{prefix}/{name}: on disk, not listed in {where}")
    return problems


def verify(path: Path) -> list[str]:
    """Problems with the batch at `path` against its SHA256SUMS; empty means intact."""
    return check(path)[1]


if TYPE_CHECKING:  # mypy proves JobDir is a ResultSink

    def _is_sink(job: JobDir) -> ResultSink:
        return job
