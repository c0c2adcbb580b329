"""How the consumer shows what arrives: compact rich tables, or JSON lines.

Whatever it shows is written out (flushed) before it returns: the follower
acknowledges a page of the change log once every change of it was shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from consumer.follow import Change

SHOWN_ROWS = 5


def json_lines(change: Change) -> list[str]:
    """One line per row (upserts) or key (deletes); one line for a truncate.

    Applied in order (upsert: put the row under its key; delete: remove the
    key; truncate: empty the table), the lines give the copies' state.
    """
    base: dict[str, Any] = {"position": change.position, "table": change.table, "op": change.op}
    if change.catch_up:
        base["catch_up"] = True
    if change.op == "upsert":
        items = [{**base, "key": key, "row": row} for key, row in zip(change.keys, change.rows, strict=True)]
    elif change.op == "delete":
        items = [{**base, "key": key} for key in change.keys]
    else:
        items = [base]
    return [json.dumps(item, default=str) for item in items]


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text[:12] + "…" if len(text) > 14 else text


def render(change: Change) -> Table | Text:
    stamp = datetime.fromtimestamp(change.fetched_at).strftime("%H:%M:%S.%f")[:-3]
    head = f"{stamp} [{change.position}] sanitized.{change.table}"
    source = " (re-read)" if change.catch_up else ""
    if change.op == "truncate":
        return Text(f"{head} truncated{source}")
    if change.op == "delete":
        keys = ", ".join(",".join(_cell(v) for v in key.values()) for key in change.keys[:SHOWN_ROWS])
        more = f" and {len(change.keys) - SHOWN_ROWS} more" if len(change.keys) > SHOWN_ROWS else ""
        return Text(f"{head} delete {len(change.keys)} row(s): {keys}{more}")
    table = Table(
        title=Text(f"{head} upsert {len(change.rows)} row(s){source}"),
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
            # Straight to the file: a console's markup pass would cost more than the JSON.
            console.file.write("".join(line + "\n" for line in json_lines(change)))
        else:
            shown = render(change)
            console.print(shown, soft_wrap=isinstance(shown, Text), highlight=False)
        console.file.flush()

    return show
