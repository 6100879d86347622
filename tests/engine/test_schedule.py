import pytest

from maskrcnn.config import SolverConfig
from maskrcnn.engine.schedule import learning_rate_factor


def test_warmup_then_steps():
    solver = SolverConfig(warmup_iters=100, warmup_factor=0.001, steps=(1000, 1500), gamma=0.1)
    assert learning_rate_factor(0, solver) == pytest.approx(0.001)
    assert learning_rate_factor(50, solver) == pytest.approx(0.001 * 0.5 + 0.5)
    assert learning_rate_factor(100, solver) == pytest.approx(1.0)
    assert learning_rate_factor(999, solver) == pytest.approx(1.0)
    assert learning_rate_factor(1000, solver) == pytest.approx(0.1)
    assert learning_rate_factor(1600, solver) == pytest.approx(0.01)


def test_no_warmup():
    solver = SolverConfig(warmup_iters=0, steps=(10,))
    assert learning_rate_factor(0, solver) == 1.0
    assert learning_rate_factor(10, solver) == pytest.approx(0.1)
