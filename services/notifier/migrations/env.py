"""Alembic environment: migrations run on the connection the caller passes in."""

from services.sql import run_env

run_env()
