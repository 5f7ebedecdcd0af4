"""A job's fingerprint: what it asks of its provider, as one stable sha256.

Provider, type, canonical params (after `each` expansion), the runner-side `fetch` (with the
provider's defaults filled in) and `retry` options, and the fingerprint's own schema version;
never the job id, tags, timeouts, poll policy, the API key or the batch. Canonical JSON
(sorted keys) makes it the same in every process and for every ordering of params keys.
"""

from __future__ import annotations

import hashlib
from typing import Any

from runner.plan import JobSpec
from runner.store.jsonio import canonical_json

# Raised when what goes into a fingerprint changes: every earlier result stops matching
# (an older runner's job.json is then never reused by mistake).
FINGERPRINT_VERSION = 1
MANIFEST_VERSION = 1  # the manifest format the params were read under (`version: 1`)
PREFIX = "sha256:"


def fingerprint_document(spec: JobSpec) -> dict[str, Any]:
    """What the fingerprint is the hash of (shown by `runner diff` when two jobs differ)."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "manifest_version": MANIFEST_VERSION,
        "provider": spec.provider,
        "type": spec.type,
        "params": spec.params,
        "fetch": dict(spec.fetch),
        "retry": spec.retry,
    }


def job_fingerprint(spec: JobSpec) -> str:
    """`sha256:<hex>` of the canonical JSON of `fingerprint_document(spec)`."""
    return PREFIX + hashlib.sha256(canonical_json(fingerprint_document(spec))).hexdigest()
