"""Count what the robustness suite tries: concrete cases per test, grouped by category.

A test that checks many inputs in a loop (every truncation point of a file, every Hypothesis example)
calls :func:`tried`; any other test counts as one case. ``conftest.py`` prints the table.
"""

from __future__ import annotations

from collections import defaultdict

#: category -> cases tried so far by the running test
_current: dict[str, str | None] = {"category": None}
cases: defaultdict[str, int] = defaultdict(int)


def start(category: str) -> None:
    _current["category"] = category
    cases[category] += 0


def tried(n: int = 1) -> None:
    """Record ``n`` concrete cases tried by the running test."""
    cat = _current["category"]
    if cat is not None:
        cases[cat] += n
