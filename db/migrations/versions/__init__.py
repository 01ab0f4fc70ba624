"""Alembic revision scripts (one file per schema revision: 0001_initial.py, 0002_...)."""
