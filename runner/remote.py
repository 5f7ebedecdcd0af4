"""A job on a provider's side: where to find it (RemoteRef), what it last said (Status), what
its fetch wrote (FetchReport, into a ResultSink). Plain values and one protocol, shared by
the lifecycle, the store and every adapter, so they sit below all three."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class RemoteState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # a status we do not know: non-terminal, logged once

    @property
    def terminal(self) -> bool:
        return self in {
            RemoteState.SUCCEEDED,
            RemoteState.FAILED,
            RemoteState.CANCELLED,
            RemoteState.EXPIRED,
        }


@dataclass(frozen=True, slots=True)
class Status:
    state: RemoteState
    raw: str  # the provider's own status string, as sent
    reason: str | None = None  # done_reason / error_code / error
    progress: float | None = None  # 0..1 when the provider gives one
    partial: bool = False  # succeeded with failed items
    results_ready: bool = True  # e.g. Lobstr export_done
    phase: str | None = None  # free text: Lobstr uploading, Skop extracting
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the raw body


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """Everything needed to find a remote job again; JSON-serializable for the journal."""

    id: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. Lobstr squid, Pulse kind

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemoteRef:
        return cls(id=str(data["id"]), extra=dict(data.get("extra") or {}))


class ResultSink(Protocol):
    """Where an adapter puts what it fetched: the job's directory, written atomically."""

    def write_result(self, obj: Any) -> None:
        """The single result document (result.json)."""
        ...

    def append_item(self, obj: Any) -> None:
        """One result item, streamed to results.jsonl in order."""
        ...

    def file_path(self, name: str) -> Path:
        """A fresh path under files/ for `name`, sanitized and numbered on collision."""
        ...

    def write_file(self, name: str, data: bytes) -> Path:
        """Write `data` atomically to a fresh path under files/ (as `file_path`)."""
        ...


@dataclass(frozen=True, slots=True)
class FetchReport:
    items: int = 0  # result items written
    files: int = 0  # files downloaded
    partial: bool = False  # some items failed or were skipped
    notes: tuple[str, ...] = ()  # human-readable remarks for job.json
    outcome: Mapping[str, Any] = field(default_factory=dict)  # extra fields for job.json
