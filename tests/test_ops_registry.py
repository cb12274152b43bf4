"""The op registry (tvm_arq.ops): every kernel has a TE compute and a numpy twin with the same constants."""

from __future__ import annotations

import inspect

import pytest

from tvm_arq.ops import REGISTRY
from tvm_arq.ops.registry import Kind, Stage


def _keywords(fn) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


def _names(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


@pytest.mark.parametrize("name", sorted(REGISTRY.kernels))
def test_kernel_has_compute_and_twin(name: str) -> None:
    k = REGISTRY.kernel(name)
    assert k.compute is not None and k.reference is not None, name
    # the constants (``arq.params``) are keyword arguments of both
    assert _keywords(k.compute) <= _names(k.reference) and _keywords(k.reference) <= _names(k.compute), name


def test_rules_are_consistent() -> None:
    for op, rule in REGISTRY.plan_rules.items():
        assert op.startswith("relax."), op
        if rule.kind is Kind.GROUP:
            assert rule.inputs is not None, op
        if rule.epilogue:
            assert rule.kind is Kind.PASS and rule.nonneg is not None, op
    for r in REGISTRY.realize_rules:
        assert (r.pattern is not None) == (r.stage is Stage.PATTERN)
        assert bool(r.ops) == (r.stage in (Stage.PRODUCER, Stage.PASS, Stage.ITEM))
    # every pass-through op the planner makes integer has a realize rule
    passing = {op for op, r in REGISTRY.plan_rules.items() if r.kind is Kind.PASS and not r.tuple_output}
    realized = {op for r in REGISTRY.realize(Stage.PASS) for op in r.ops}
    assert passing <= realized, passing - realized
