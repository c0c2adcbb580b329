"""Run pgveil's Alembic migrations from Python (the services, the demo and the tests use this).

The caller passes the target URL, already resolved; the Alembic environment
(``migrations/env.py``) uses it as given. Alembic (and SQLAlchemy under it) is
imported when a migration runs: the import takes about a second, which commands
that never migrate (a dump) should not pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pgveil import resources

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = resources.VERSION_TABLE


def alembic_config(
    database_url: str,
    *,
    with_demo: bool = False,
    locale: str | None = None,
    faker_providers: Sequence[str] | None = None,
) -> Config:
    """Config for the toolkit's revisions, plus the demo application's if asked."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.migrations_dir()))
    locations = [resources.toolkit_versions_dir()]
    if with_demo:
        locations.append(resources.demo_versions_dir())
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", ":".join(str(p) for p in locations))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["locale"] = locale  # Faker locale of the fake dictionaries
    # Extra Faker providers whose dictionaries are loaded after the upgrade (migrations/env.py).
    cfg.attributes["faker_providers"] = tuple(faker_providers) if faker_providers is not None else None
    return cfg


def heads(cfg: Config) -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(cfg).get_heads())


def upgrade(
    database_url: str,
    *,
    with_demo: bool = False,
    target: str = "head",
    locale: str | None = None,
    faker_providers: Sequence[str] | None = None,
) -> None:
    from alembic import command

    cfg = alembic_config(database_url, with_demo=with_demo, locale=locale, faker_providers=faker_providers)
    command.upgrade(cfg, target)


def downgrade(database_url: str, *, with_demo: bool = False, target: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url, with_demo=with_demo), target)
