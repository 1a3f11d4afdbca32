"""The five participant services; each owns its own database and Redis key prefix."""
