"""Alembic environment for pgveil.

The target: the URL the caller resolved (``pgveil.migrate`` passes it in
``config.attributes["database_url"]`` and it is used as given), else — Alembic
run from a checkout's command line — ``-x database_url=…``, else
``DATABASE_URL``, else the running sandbox. Preflight checks run before
anything is changed, and their failures reach the user as one ``FAILED: …``
line from Alembic.

Extra Faker dictionaries (``pgveil.dictionaries.load_providers``): the providers
named in ``config.attributes["faker_providers"]`` or ``-x faker_providers=ssn,…``
are generated and loaded after the migrations, in the same transaction, so
they can be added to a database already at head by running the upgrade again.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

import pgveil.alembic_ops  # noqa: F401  (registers op.security_label, op.rotate_key)
from pgveil import config as pgveil_config
from pgveil import dictionaries, preflight
from pgveil.errors import PgveilError
from pgveil.installer import driver_connection
from pgveil.migrate import VERSION_TABLE


def requested_faker_providers() -> tuple[str, ...]:
    """Extra Faker providers asked for (the caller's attribute, else ``-x faker_providers``),
    each checked against Faker before anything is changed."""
    requested = context.config.attributes.get("faker_providers")
    if requested is None:
        requested = context.get_x_argument(as_dictionary=True).get("faker_providers")
    providers = dictionaries.parse_providers(requested)
    locale = (
        context.config.attributes.get("locale")
        or context.get_x_argument(as_dictionary=True).get("locale")
        or dictionaries.DEFAULT_LOCALE
    )
    try:
        dictionaries.check_providers(providers, locale)
    except PgveilError as exc:
        raise CommandError(str(exc)) from None
    return providers


def load_faker_providers(connection: Connection, providers: tuple[str, ...]) -> None:
    """After the migrations: the extra dictionaries, where the toolkit's dictionaries are."""
    if not providers or connection.exec_driver_sql("SELECT to_regclass('veil.dictionaries')").scalar() is None:
        return
    try:
        dictionaries.load_providers(driver_connection(connection), providers)
    except PgveilError as exc:
        raise CommandError(str(exc)) from None


def run_migrations(connection: Connection) -> None:
    providers = requested_faker_providers()
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        # One transaction for the whole upgrade: a failed step leaves the
        # database as it was.
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
        load_faker_providers(connection, providers)


def command_line_url() -> str:
    """Alembic run directly: ``-x database_url=…``, else DATABASE_URL, else the running sandbox."""
    from pgveil import sandbox  # only this entry point falls back to the sandbox

    explicit = context.get_x_argument(as_dictionary=True).get("database_url")
    return pgveil_config.database_url(explicit, fallback=sandbox.running_url)


def main() -> None:
    if context.config.config_file_name is not None:
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        raise CommandError("pgveil migrations run online only: they generate keys and dictionaries in the database")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    try:
        url = context.config.attributes.get("database_url") or command_line_url()
        preflight.run(url)
    except PgveilError as exc:
        raise CommandError(str(exc)) from None
    engine = create_engine(pgveil_config.sqlalchemy_url(url), poolclass=NullPool)
    with engine.connect() as connection:
        run_migrations(connection)


main()
