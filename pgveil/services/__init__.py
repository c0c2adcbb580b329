"""pgveil's services: the work behind the CLI (and, later, the REST API).

One module per concern — ``masking``, ``streaming``, ``keys``, ``install`` —
each function taking a psycopg connection (or, where Alembic runs, a database
URL the caller has already resolved) and returning plain data: dataclasses,
dicts, numbers. Long work reports progress through a callback parameter.
Nothing here prints, parses arguments, or imports typer or rich; failures a
user can fix are :class:`pgveil.errors.PgveilError` with one line naming the
fix.
"""
