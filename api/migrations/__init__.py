"""Alembic migrations of the service's schema (`api.db.migrate` runs them at start)."""
