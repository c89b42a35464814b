"""The chat runtime: run streams in Redis, limits, compiled agent configs, agent types and the run executor."""
