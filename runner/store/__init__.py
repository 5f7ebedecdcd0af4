"""What a batch leaves on disk: journal, results directory, log, lock, input copies,
and the helpers that keep it safe (atomic JSON, sanitized names, redaction)."""
