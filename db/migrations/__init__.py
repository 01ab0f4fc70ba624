"""Alembic migration environment and revision scripts of the dlth-orch database (see db.migrate)."""
