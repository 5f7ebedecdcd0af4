"""Reading a manifest: YAML with positions, `each` expansion, provider settings, JSON Schema
checks, located problems. Entry point: `runner.manifest.loader.load_manifest`."""
