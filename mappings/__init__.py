"""The mapping library: YAML mappings shipped with odpmap (package data)."""
