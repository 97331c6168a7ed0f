"""Reading: windowed aggregates, latency distributions, the fleet and health, in API shapes."""
