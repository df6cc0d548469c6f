"""1. The job spec: typed, validated and normalised once at load time (YAML in, pydantic records out)."""
