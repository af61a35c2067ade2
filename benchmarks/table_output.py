"""What every benchmark ends with: a table on the terminal and the same numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def emit(title: str, columns: list[str], rows: list[list], result: dict, out: Path) -> None:
    """Print `rows` under `columns`, then write `result` to `out` as JSON."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*[str(value) for value in row])
    Console().print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
