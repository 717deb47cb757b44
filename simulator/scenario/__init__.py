"""Scenario files: a simulated swarm described in YAML, run in the simulator, reported as files."""
