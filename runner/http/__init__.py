"""Talking to a provider: the gated, retrying client over one transport, and the
rate-limit headers it reads."""
