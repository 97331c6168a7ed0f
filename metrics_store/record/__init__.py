"""Recording: the collector, its buffer and flusher, and the encoding of a batch for Redis."""
