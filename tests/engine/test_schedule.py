import pytest
import torch

from maskrcnn.config import SolverConfig
from maskrcnn.engine.schedule import learning_rate_factor
from maskrcnn.engine.trainer import make_optimizer, use_fused_sgd


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


def test_loss_scaling_with_an_overflowing_first_step_updates_like_plain_sgd():
    # The scaler skips the overflowing first step; the next one must start from fresh
    # momentum (the fused kernel would keep uninitialised buffers here).
    torch.manual_seed(0)
    initial = [torch.randn(256, 64), torch.randn(9)]
    params = [torch.nn.Parameter(p.clone()) for p in initial]
    optimizer = make_optimizer(params, SolverConfig(base_lr=0.1, momentum=0.9, weight_decay=0.0), True)
    assert not optimizer.param_groups[0]["fused"]
    scaler = torch.amp.GradScaler("cpu")
    for factor in (float("inf"), 1.0):
        optimizer.zero_grad()
        scaler.scale(sum((p * p).sum() for p in params) * factor).backward()
        scaler.step(optimizer)
        scaler.update()
    for got, p0 in zip(params, initial):
        # One real step of plain SGD: the buffer is the gradient 2 p0.
        torch.testing.assert_close(optimizer.state[got]["momentum_buffer"], 2 * p0)
        torch.testing.assert_close(got.detach(), p0 - 0.1 * 2 * p0)


def test_use_fused_sgd_after_loading_a_state_saved_without_it():
    params = [torch.nn.Parameter(torch.randn(4))]
    saved = torch.optim.SGD(params, lr=0.1, momentum=0.9).state_dict()
    assert not saved["param_groups"][0]["fused"]
    for loss_scaling, want in ((False, True), (True, None)):
        optimizer = make_optimizer(params, SolverConfig(), loss_scaling)
        optimizer.load_state_dict(saved)
        use_fused_sgd(optimizer, loss_scaling)
        assert optimizer.param_groups[0]["fused"] is want
