"""metrics-store's processes: the sampler, job workers, the simulator and the CLI."""
