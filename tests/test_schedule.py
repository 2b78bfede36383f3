"""The learning-rate schedule: warmup, cosine decay shaped by max_steps, end LR."""

import math

import pytest

from benchmark.schedule import lr_at

KW = dict(base_lr=4e-4, end_lr=4e-5, warmup_steps=16, max_steps=1_200_000)


def test_warmup():
    assert lr_at(0, **KW) == pytest.approx(4e-4 / 17)
    assert lr_at(7, **KW) == pytest.approx(4e-4 * 8 / 17)
    assert lr_at(16, **KW) == pytest.approx(4e-4)  # warmup end reaches the base rate


def test_cosine_decay():
    mid = 16 + (1_200_000 - 16) // 2
    assert lr_at(mid, **KW) == pytest.approx((4e-4 + 4e-5) / 2, rel=1e-9)
    quarter = 16 + (1_200_000 - 16) // 4
    expected = 4e-5 + (4e-4 - 4e-5) * 0.5 * (1 + math.cos(math.pi * (quarter - 16) / (1_200_000 - 16)))
    assert lr_at(quarter, **KW) == pytest.approx(expected, rel=1e-12)
    assert lr_at(1_200_000, **KW) == pytest.approx(4e-5)
    assert lr_at(1_300_000, **KW) == 4e-5
    # over a benchmark-length run the decay is slight: 10,000 steps lose under 0.02% of the rate
    assert 0.9998 * 4e-4 < lr_at(10_000, **KW) < 4e-4


def test_no_warmup():
    assert lr_at(0, base_lr=1.0, end_lr=0.1, warmup_steps=0, max_steps=10) == pytest.approx(1.0)
