"""Run pgveil's Alembic migrations from Python (the services, the demo and the tests use this).

The caller passes the target URL, already resolved; the Alembic environment
(``migrations/env.py``) uses it as given.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgveil import resources

# Alembic's record of the applied toolkit revisions, apart from an
# application's own alembic_version.
VERSION_TABLE = "pgveil_version"


def alembic_config(
    database_url: str,
    *,
    with_demo: bool = False,
    locale: str | None = None,
    faker_providers: Sequence[str] | None = None,
) -> Config:
    """Config for the toolkit's revisions, plus the demo application's if asked."""
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
    return list(ScriptDirectory.from_config(cfg).get_heads())


def upgrade(
    database_url: str,
    *,
    with_demo: bool = False,
    target: str = "head",
    locale: str | None = None,
    faker_providers: Sequence[str] | None = None,
) -> None:
    cfg = alembic_config(database_url, with_demo=with_demo, locale=locale, faker_providers=faker_providers)
    command.upgrade(cfg, target)


def downgrade(database_url: str, *, with_demo: bool = False, target: str = "base") -> None:
    command.downgrade(alembic_config(database_url, with_demo=with_demo), target)
