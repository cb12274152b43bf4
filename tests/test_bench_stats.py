"""The benchmark's interval statistics: Wilson bounds, and AP recomputed from per-image matches equals the
reference implementation (so bootstrap resamples measure the same metric)."""

from __future__ import annotations

import numpy as np
import pytest

from arq_bench import detection, stats


def _random_set(rng: np.random.Generator, n_images: int) -> tuple[list, list]:
    dets, gts = [], []
    for _ in range(n_images):
        g = int(rng.integers(0, 5))
        xy = rng.uniform(0, 300, (g, 2))
        gb = np.concatenate([xy, xy + rng.uniform(10, 60, (g, 2))], 1).astype(np.float32)
        gl = rng.integers(0, 3, g)
        d = int(rng.integers(0, 8))
        src = rng.integers(0, max(g, 1), d)
        jitter = rng.normal(0, 6, (d, 4)).astype(np.float32)
        db = (gb[src] + jitter) if g else rng.uniform(0, 300, (d, 4)).astype(np.float32)
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dl = np.where(rng.random(d) < 0.8, gl[src] if g else 0, rng.integers(0, 3, d))
        scores = np.round(rng.random(d), 2).astype(np.float32)  # ties on purpose
        dets.append(detection.Detections(db, scores, dl.astype(np.int64)))
        gts.append(detection.Detections(gb, np.ones(g, np.float32), gl.astype(np.int64)))
    return dets, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_from_matches_equals_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dets, gts = _random_set(rng, 40)
    matches = [stats.match_detections(d, g) for d, g in zip(dets, gts, strict=True)]
    ap = stats.ap_from_matches(matches)
    assert ap[0] == pytest.approx(detection.ap50(dets, gts), abs=1e-12)
    assert ap.mean() == pytest.approx(detection.ap50_95(dets, gts), abs=1e-12)
    idx = rng.integers(0, 40, 40)  # a bootstrap resample (repeated images) equals the reference on copies
    sub = stats.ap_from_matches(matches, idx)
    assert sub[0] == pytest.approx(detection.ap50([dets[i] for i in idx], [gts[i] for i in idx]), abs=1e-12)


def test_wilson_interval() -> None:
    lo, hi = stats.wilson_interval(95, 100)
    assert 0.88 < lo < 0.89 and 0.978 < hi < 0.979  # textbook values 0.8882, 0.9785
    assert stats.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_paired_bootstrap_detects_a_real_difference() -> None:
    a = np.r_[np.ones(90), np.zeros(10)]
    b = np.r_[np.ones(70), np.zeros(30)]
    (lo, hi), (dlo, dhi) = stats.paired_bootstrap(lambda i: (a[i].mean(), b[i].mean()), 100, rounds=400)
    assert lo < 0.9 < hi and dlo > 0.0 and dlo < 0.2 < dhi
