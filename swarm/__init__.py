"""The `swarm` command: settings, logging and the thin entry points that start each role."""
