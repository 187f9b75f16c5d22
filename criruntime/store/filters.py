"""Row filters the stores share, so a filtered list parses only the rows it returns: kubelet
lists a pod's sandboxes and containers by its UID label on every sync of that pod."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping


class Where:
    """A WHERE clause built from optional conditions."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[object] = []

    def equals(self, column: str, value: object) -> Where:
        self.clauses.append(f"{column} = ?")
        self.params.append(value)
        return self

    def prefix(self, column: str, prefix: str) -> Where:
        """IDs by unique prefix, as crictl takes them, still on the primary key's index."""
        if prefix:
            self.clauses.append(f"{column} >= ? AND {column} < ?")
            self.params += [prefix, prefix + "\uffff"]
        return self

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


def with_labels(
    rows: list[sqlite3.Row],
    labels_of: Callable[[bytes], Mapping[str, str]],
    selector: Mapping[str, str],
) -> list[sqlite3.Row]:
    """The rows whose config (parsed by `labels_of`, alone) has every label of the selector."""
    if not selector:
        return rows
    kept = []
    for row in rows:
        labels = labels_of(row["config"])
        if all(labels.get(k) == v for k, v in selector.items()):
            kept.append(row)
    return kept
