"""pgveil: an in-database privacy toolkit for PostgreSQL."""

__version__ = "0.1.0"
