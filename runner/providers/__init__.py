"""Provider adapters, one module each; the registry of them is `runner.providers.registry`."""
