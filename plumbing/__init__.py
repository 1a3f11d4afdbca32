"""Plumbing every loyalty process needs: settings, database and Redis clients, telemetry,
JSON logs, error mapping and the gRPC server bootstrap. No domain rule lives here."""
