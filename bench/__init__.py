"""metrics-store's benchmarks: `make bench` (quick) or `make bench FULL=1`."""
