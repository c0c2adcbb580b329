"""Run pgveil's Alembic migrations from Python (the CLI and the tests use this)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from pgveil import resources


def alembic_config(database_url: str, *, with_demo: bool = False, locale: str | None = None) -> Config:
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
    return cfg


def heads(cfg: Config) -> tuple[str, ...]:
    return ScriptDirectory.from_config(cfg).get_heads()


def upgrade(database_url: str, *, with_demo: bool = False, target: str = "head",
            locale: str | None = None) -> None:
    command.upgrade(alembic_config(database_url, with_demo=with_demo, locale=locale), target)


def downgrade(database_url: str, *, with_demo: bool = False, target: str = "base") -> None:
    command.downgrade(alembic_config(database_url, with_demo=with_demo), target)
