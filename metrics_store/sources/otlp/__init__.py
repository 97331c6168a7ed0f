"""OTLP/HTTP metrics with the GenAI semantic conventions, recorded as aggregates (docs/otel.md)."""
