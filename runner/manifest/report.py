"""Problems and notices of one manifest, each located in the file by a path into the
document (`jobs[3] (id: shop-prices).params.urls[0]` at `FILE:LINE:COL`).
"""

from __future__ import annotations

import re
from typing import Any

from runner.errors import ManifestError, Problem
from runner.manifest.yamlsafe import Pos

PathT = tuple[str | int, ...]
Where = tuple[str, int, int]  # file, line, column

_SIMPLE_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_-]*$")


class Report:
    """Collects the problems and notices of one document (set `doc` and `pos` once read)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.doc: dict[str, Any] = {}
        self.pos = Pos(1, 1)
        self.problems: list[Problem] = []
        self.notices: list[str] = []

    def locate(self, path: PathT, at_key: bool = False) -> tuple[int, int]:
        """Line and column of the deepest node of `path` that exists (its key if `at_key`)."""
        node = self.pos
        for step in path:
            child = node.child(step)
            if child is None:
                return node.line, node.column
            node = child
        if at_key and node.key_line:
            return node.key_line, node.key_column
        return node.line, node.column

    def render(self, path: PathT, job_id: str | None = None) -> str:
        """`jobs[3] (id: x).params['odd key'][0]`: a job's index is followed by its id."""
        out = ""
        for index, step in enumerate(path):
            if isinstance(step, int):
                out += f"[{step}]"
                if index == 1 and path[0] == "jobs":
                    shown = job_id if job_id is not None else self._job_id(step)
                    if shown is not None:
                        out += f" (id: {shown})"
            elif _SIMPLE_KEY.match(step):
                out += f".{step}" if out else step
            else:
                out += f"[{step!r}]"
        return out

    def _job_id(self, index: int) -> str | None:
        jobs = self.doc.get("jobs")
        if isinstance(jobs, list) and index < len(jobs) and isinstance(jobs[index], dict):
            job_id = jobs[index].get("id")
            return job_id if isinstance(job_id, str) else None
        return None

    def add(
        self,
        path: PathT,
        message: str,
        *,
        at_key: bool = False,
        where: Where | None = None,
        job_id: str | None = None,
    ) -> None:
        """A problem at `path` (or at `where`, e.g. a line of an `each` file)."""
        shown = path[:-1] if at_key else path
        if where is None:
            line, col = self.locate(path, at_key)
            where = (self.file, line, col)
        self.problems.append(
            Problem(where[0], where[1], where[2], self.render(shown, job_id), message)
        )

    def notice(self, path: PathT, message: str) -> None:
        line, col = self.locate(path)
        self.notices.append(f"notice: {self.file}:{line}:{col}: {self.render(path)}: {message}")

    def note(self, message: str) -> None:
        """A notice about no place in the file."""
        self.notices.append(f"notice: {message}")

    def fail_now(self, line: int, column: int, message: str) -> ManifestError:
        """The error for a problem that stops the reading at once (syntax, not a mapping)."""
        return ManifestError([Problem(self.file, line, column, "", message)])
