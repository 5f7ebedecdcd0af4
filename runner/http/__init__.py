"""Talking to a provider within its limits: the gated, retrying client over one transport,
the Gate (pacing, pauses, outages), backoff, and the rate-limit headers it reads."""
