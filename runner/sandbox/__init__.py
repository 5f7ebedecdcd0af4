"""The sandbox: all five providers' APIs as one deterministic local ASGI service."""
