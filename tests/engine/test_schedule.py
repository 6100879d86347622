import pytest
import torch

from maskrcnn.config import SolverConfig
from maskrcnn.engine.schedule import learning_rate_factor
from maskrcnn.engine.trainer import make_optimizer


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


def test_make_optimizer_is_fused_sgd_with_the_solver_settings_and_plain_sgd_updates():
    torch.manual_seed(0)
    solver = SolverConfig(base_lr=0.1, momentum=0.9, weight_decay=0.01)
    fused_params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in fused_params]
    initial = [p.detach().clone() for p in fused_params]
    fused = make_optimizer(fused_params, solver)
    plain = torch.optim.SGD(plain_params, lr=0.1, momentum=0.9, weight_decay=0.01)
    assert fused.param_groups[0]["fused"] is True
    for _ in range(3):
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            grads = torch.Generator().manual_seed(1)
            for p in params:
                p.grad = torch.randn(p.shape, generator=grads)
            optimizer.step()
    for got, want in zip(fused_params, plain_params):
        torch.testing.assert_close(got, want)
    assert all((p - p0).abs().min() > 1e-3 for p, p0 in zip(fused_params, initial))
