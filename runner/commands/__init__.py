"""Subcommands of the `runner` CLI, one module each."""
