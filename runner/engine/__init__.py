"""Driving jobs: the engine and its lanes, the decision table for failures, and recovery
(resume, interrupt, cancel)."""
