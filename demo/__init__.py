"""The demo application's own code: the `pgveil demo` flow (:mod:`demo.flow`) and the
roles its Alembic revisions in ``migrations/demo`` create (:mod:`demo.roles`).

Like ``loader`` and ``consumer``, it depends on the toolkit; the toolkit never
imports it, and the wheel does not ship it.
"""
