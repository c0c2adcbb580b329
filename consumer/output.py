"""How the consumer shows what arrives: compact rich tables, or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from consumer.follow import Change

SHOWN_ROWS = 5


def json_lines(change: Change) -> list[str]:
    """One line per row (upserts) or key (deletes); one line for a truncate or unkeyed delete."""
    base: dict[str, Any] = {"table": change.table, "op": change.op}
    if change.catch_up:
        base["catch_up"] = True
    if change.op == "upsert":
        items = [{**base, "row": row} for row in change.rows]
    elif change.keys:
        items = [{**base, "key": key} for key in change.keys]
    else:
        items = [{**base, "rows": change.count}]
    return [json.dumps(item, default=str) for item in items]


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text[:12] + "…" if len(text) > 14 else text


def render(change: Change) -> Table | str:
    stamp = datetime.fromtimestamp(change.fetched_at).strftime("%H:%M:%S.%f")[:-3]
    source = " (catch-up)" if change.catch_up else ""
    if change.op == "truncate":
        return f"{stamp} sanitized.{change.table} truncated"
    if change.op == "delete":
        return f"{stamp} sanitized.{change.table} delete {change.count} row(s){source}"
    table = Table(
        title=f"{stamp} sanitized.{change.table} upsert {len(change.rows)} row(s){source}",
        title_justify="left",
        title_style="bold",
    )
    columns = list(change.rows[0])
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for row in change.rows[:SHOWN_ROWS]:
        table.add_row(*(_cell(row[c]) for c in columns))
    if len(change.rows) > SHOWN_ROWS:
        table.caption = f"… and {len(change.rows) - SHOWN_ROWS} more"
    return table


def printer(console: Console, as_json: bool) -> Callable[[Change], None]:
    def show(change: Change) -> None:
        if as_json:
            for line in json_lines(change):
                console.out(line, highlight=False)
        else:
            console.print(render(change))

    return show
