"""The manifest of a pgveil dump: what was dumped, from where, under which rules.

A directory archive holds it as ``pgveil-manifest.json`` beside ``toc.dat`` (pg_restore
ignores files it does not list); a plain script carries it on its first line, as a SQL
comment (``-- pgveil-manifest: {...}``) that psql skips. It records no data value:
row counts, and per column the rule it was written with.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgveil.errors import PgveilError

# The manifest's format number: readers refuse a newer one.
FORMAT = 1
FILE_NAME = "pgveil-manifest.json"
PLAIN_PREFIX = "-- pgveil-manifest: "


@dataclass(frozen=True)
class ColumnRule:
    column: str
    # The rule's label ("MASKED WITH FUNCTION …", "NOT MASKED"), or "uncovered: keep|null".
    rule: str
    changes: bool


@dataclass(frozen=True)
class DumpedTable:
    schema: str
    table: str
    rows: int
    columns: tuple[ColumnRule, ...]
    # The table's data file in a directory archive ("" in a plain script), its size
    # and SHA-256: a restore checks them before it writes anything.
    file: str = ""
    bytes: int = 0
    sha256: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Manifest:
    pgveil_version: str
    archive_format: str  # "directory" or "plain"
    policy: str
    # SHA-256 of the policy's rules and its 'uncovered' choice at dump time.
    rules_hash: str
    uncovered: str
    source_server_version: str
    source_server_version_num: int
    source_database: str
    snapshot_time: str
    sections: str  # "all", "schema" or "data"
    tables: tuple[DumpedTable, ...] = field(default_factory=tuple)
    format: int = FORMAT
    # A subset's shape (direction, seeded tables, percentages, virtual keys), never
    # its conditions' text, which may quote a value; None: every row.
    subset: dict[str, Any] | None = None

    @property
    def source_major(self) -> int:
        return self.source_server_version_num // 10000

    def as_dict(self) -> dict[str, Any]:
        return {"pgveil_dump": self.format, **{k: v for k, v in asdict(self).items() if k != "format"}}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))


def from_dict(doc: Any, source: str) -> Manifest:
    if not isinstance(doc, dict) or not isinstance(doc.get("pgveil_dump"), int):
        raise PgveilError(f"{source} holds no pgveil dump manifest")
    if doc["pgveil_dump"] > FORMAT:
        raise PgveilError(
            f"{source} was written by a newer pgveil (manifest format {doc['pgveil_dump']}, this pgveil reads "
            f"{FORMAT}): upgrade pgveil to restore it"
        )
    try:
        tables = tuple(
            DumpedTable(
                schema=str(t["schema"]),
                table=str(t["table"]),
                rows=int(t["rows"]),
                columns=tuple(ColumnRule(str(c["column"]), str(c["rule"]), bool(c["changes"])) for c in t["columns"]),
                file=str(t.get("file", "")),
                bytes=int(t.get("bytes", 0)),
                sha256=str(t.get("sha256", "")),
            )
            for t in doc["tables"]
        )
        return Manifest(
            pgveil_version=str(doc["pgveil_version"]),
            archive_format=str(doc["archive_format"]),
            policy=str(doc["policy"]),
            rules_hash=str(doc["rules_hash"]),
            uncovered=str(doc["uncovered"]),
            source_server_version=str(doc["source_server_version"]),
            source_server_version_num=int(doc["source_server_version_num"]),
            source_database=str(doc["source_database"]),
            snapshot_time=str(doc["snapshot_time"]),
            sections=str(doc["sections"]),
            tables=tables,
            format=int(doc["pgveil_dump"]),
            subset=dict(doc["subset"]) if doc.get("subset") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise PgveilError(f"{source}: the pgveil manifest is corrupt ({type(e).__name__}: {e})") from None


def write_directory(directory: Path, manifest: Manifest) -> None:
    (directory / FILE_NAME).write_text(manifest.to_json() + "\n")


def plain_line(manifest: Manifest) -> str:
    return PLAIN_PREFIX + manifest.to_json() + "\n"


def read(path: Path) -> Manifest:
    """The manifest of a directory archive or a plain script (gzipped or not)."""
    if path.is_dir():
        file = path / FILE_NAME
        if not file.is_file():
            raise PgveilError(f"{path} is not a pgveil dump: it has no {FILE_NAME}")
        try:
            return from_dict(json.loads(file.read_text()), str(file))
        except json.JSONDecodeError:
            raise PgveilError(f"{file} is corrupt: not JSON") from None
    if not path.is_file():
        raise PgveilError(f"{path} does not exist")
    first = _first_line(path)
    if not first.startswith(PLAIN_PREFIX):
        raise PgveilError(f"{path} is not a pgveil dump: its first line is not a pgveil manifest")
    try:
        return from_dict(json.loads(first[len(PLAIN_PREFIX) :]), str(path))
    except json.JSONDecodeError:
        raise PgveilError(f"{path}: the pgveil manifest line is corrupt") from None


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _first_line(path: Path) -> str:
    try:
        if is_gzip(path):
            with gzip.open(path, "rt", encoding="utf-8") as g:
                return g.readline(1 << 24)
        with path.open(encoding="utf-8") as f:
            return f.readline(1 << 24)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise PgveilError(f"{path} cannot be read as a pgveil dump ({type(e).__name__})") from None
