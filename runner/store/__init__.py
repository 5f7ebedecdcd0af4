"""What a batch leaves on disk: journal, results directory, log, lock, and the helpers that
keep it safe (atomic JSON, sanitized names, redaction, which batch a DIR names)."""
