"""Docker Swarm backend: the same stack, deploys and backups on a swarm (docs/swarm.md)."""
