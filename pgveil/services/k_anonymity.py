"""Re-identification risk: k-anonymity and l-diversity of a table, a view, a sanitized
copy or a policy's output (``veil.k_anonymity``, sql/0011_verify/30_k_anonymity.sql).

The server groups the rows and returns counts only; no value reaches Python. The
measure runs with the connecting role's rights: it reads what that role may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgveil import preflight
from pgveil.errors import PgveilError, server_message

# The relation as PostgreSQL resolves the name (search_path included), written
# schema-qualified whatever the session's search_path.
RESOLVE = (
    "SELECT c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s)"
)
MEASURE = (
    "SELECT k, total_rows, classes, classes_below_threshold, rows_below_threshold, share_below_threshold,"
    " smallest_classes, l_diversity, classes_not_diverse"
    " FROM veil.k_anonymity(%s::oid::regclass, %s::text[], %s, %s, %s)"
)


@dataclass(frozen=True)
class KAnonymity:
    """What ``veil.k_anonymity`` measured, and over what. ``k`` and ``l_diversity`` are
    None for an empty table; ``l_diversity`` and ``classes_not_diverse`` are None
    without a sensitive column."""

    table: str
    quasi_identifiers: tuple[str, ...]
    threshold: int
    sensitive: str | None
    policy: str | None
    k: int | None  # the size of the smallest equivalence class
    total_rows: int
    classes: int
    classes_below_threshold: int
    rows_below_threshold: int
    share_below_threshold: float  # rows_below_threshold / total_rows, 0 for an empty table
    smallest_classes: tuple[int, ...]  # the smallest classes' sizes, ascending, at most 10
    l_diversity: int | None  # the fewest distinct sensitive values in a class
    classes_not_diverse: int | None  # classes whose rows all share one sensitive value

    def as_dict(self) -> dict[str, Any]:
        """The measure as JSON-ready data."""
        data = asdict(self)
        data["quasi_identifiers"] = list(self.quasi_identifiers)
        data["smallest_classes"] = list(self.smallest_classes)
        return data


def k_anonymity(
    url: str,
    table: str,
    quasi_identifiers: Sequence[str],
    *,
    threshold: int = 5,
    sensitive: str | None = None,
    policy: str | None = None,
) -> KAnonymity:
    """Measure ``table`` ("schema.name" or a name the search_path finds) over the
    quasi-identifier columns; with ``policy``, its output under that policy (governors
    only). Bad input and refusals are PgveilErrors of one line."""
    qi = tuple(quasi_identifiers)
    with preflight.connect(url, autocommit=True) as conn:
        try:
            found = conn.execute(RESOLVE, (table,)).fetchone()
            if found is None:
                raise PgveilError(f"there is no table or view {table!r}")
            relid, name = found
            row = conn.execute(MEASURE, (relid, list(qi), threshold, sensitive, policy)).fetchone()
        except psycopg.Error as e:
            raise PgveilError(server_message(e)) from None
    assert row is not None
    return KAnonymity(
        table=str(name),
        quasi_identifiers=qi,
        threshold=threshold,
        sensitive=sensitive,
        policy=policy,
        k=row[0],
        total_rows=row[1],
        classes=row[2],
        classes_below_threshold=row[3],
        rows_below_threshold=row[4],
        share_below_threshold=float(row[5]),
        smallest_classes=tuple(row[6]),
        l_diversity=row[7],
        classes_not_diverse=row[8],
    )
