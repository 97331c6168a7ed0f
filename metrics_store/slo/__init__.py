"""Service-level objectives: their definitions, where every process finds them, and budgets."""
