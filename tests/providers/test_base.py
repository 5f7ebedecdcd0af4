"""The Reply every adapter parses: strict JSON only."""

from __future__ import annotations

import pytest

from runner.errors import ProviderResponseError
from runner.providers import pulse
from runner.providers.base import Reply


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_not_json(constant: str) -> None:
    reply = Reply(200, {}, f'{{"progress": {constant}}}'.encode())
    with pytest.raises(ValueError, match=f"{constant} is not JSON"):
        reply.json()


def test_a_status_with_nan_fails_that_job_as_a_malformed_response() -> None:
    reply = Reply(200, {}, b'{"job_id": "j1", "status": "completed", "result": {"score": NaN}}')
    with pytest.raises(ProviderResponseError, match=r"pulse: .* is not JSON"):
        pulse.parse_status(reply)
