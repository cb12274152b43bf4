"""Robustness suite: categories, and a per-category count of what it tries (printed after the run)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.robustness import _tally

CATEGORIES = {
    "test_bad_models": "bad models",
    "test_bad_calibration": "bad calibration data",
    "test_numerics": "numerical limits",
    "test_faults": "faults",
    "test_concurrency": "concurrency",
    "test_nonfinite": "non-finite inputs",
    "test_errors": "errors naming causes",
    "test_remote": "remote module (boards)",
    "test_tuning_database": "tuning database",
    "test_interrupts": "interrupts",
}

_outcomes: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
_explicit: dict[str, int] = {}  # nodeid -> cases recorded with tried()


def category_of(path: str | Path) -> str:
    return CATEGORIES.get(Path(path).stem, Path(path).stem)


@pytest.fixture(autouse=True)
def _count_cases(request: pytest.FixtureRequest):
    cat = category_of(request.node.path)
    before = _tally.cases[cat]
    _tally.start(cat)
    yield
    _explicit[request.node.nodeid] = _tally.cases[cat] - before


_pending: dict[str, str] = {}  # nodeid -> outcome, until its teardown report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/robustness/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _pending[report.nodeid] = report.outcome
    if report.when == "teardown" and report.nodeid in _pending:  # after the counting fixture finished
        outcome = _pending.pop(report.nodeid)
        out = _outcomes[category_of(report.nodeid.split("::")[0])]
        out[outcome] += 1
        out["tests"] += 1
        n = _explicit.pop(report.nodeid, 0)
        out["cases"] += n if n > 0 else (1 if outcome != "skipped" else 0)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
    if not _outcomes:
        return
    tr = terminalreporter
    tr.section("robustness suite: what it tried")
    header = f"{'category':<22} {'tests':>6} {'cases tried':>12} {'passed':>7} {'failed':>7} {'skipped':>8}"
    tr.write_line(header)
    total: defaultdict[str, int] = defaultdict(int)
    for cat in [*CATEGORIES.values(), *sorted(set(_outcomes) - set(CATEGORIES.values()))]:
        if cat not in _outcomes:
            continue
        o = _outcomes[cat]
        for k in ("tests", "cases", "passed", "failed", "skipped"):
            total[k] += o[k]
        tr.write_line(f"{cat:<22} {o['tests']:>6} {o['cases']:>12} {o['passed']:>7} {o['failed']:>7} {o['skipped']:>8}")
    tr.write_line(f"{'total':<22} {total['tests']:>6} {total['cases']:>12} {total['passed']:>7} "
                  f"{total['failed']:>7} {total['skipped']:>8}")
