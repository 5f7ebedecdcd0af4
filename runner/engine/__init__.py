"""Driving jobs: the engine and its lanes, the decision table for failures, rate limits,
backoff, and recovery (resume, interrupt, cancel)."""
