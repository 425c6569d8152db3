import math
from types import SimpleNamespace

import pytest
import torch

from fsdlib.schedule import build_optimizer, cyclic_cosine_lr, cyclic_cosine_scheduler, fused_update

LR_MAX, LR_MIN, T = 1e-3, 1e-6, 100


def test_lr_within_a_cycle() -> None:
    assert cyclic_cosine_lr(0, T, LR_MAX, LR_MIN) == LR_MAX
    assert math.isclose(cyclic_cosine_lr(T // 2, T, LR_MAX, LR_MIN), (LR_MAX + LR_MIN) / 2)
    last = cyclic_cosine_lr(T - 1, T, LR_MAX, LR_MIN)
    assert LR_MIN < last < LR_MIN + 1e-3 * (LR_MAX - LR_MIN)
    lrs = [cyclic_cosine_lr(t, T, LR_MAX, LR_MIN) for t in range(T)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_lr_restarts_every_cycle() -> None:
    for cycle in range(1, 4):
        assert cyclic_cosine_lr(cycle * T, T, LR_MAX, LR_MIN) == LR_MAX
        assert cyclic_cosine_lr(cycle * T + 37, T, LR_MAX, LR_MIN) == cyclic_cosine_lr(37, T, LR_MAX, LR_MIN)


def test_scheduler_follows_the_formula_and_resumes() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = build_optimizer("sgd", params, lr=0.5)
    scheduler = cyclic_cosine_scheduler(optimizer, 10, 0.1, 1e-6)
    seen = []
    for _ in range(25):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([cyclic_cosine_lr(s, 10, 0.1, 1e-6) for s in range(25)])

    resumed_optimizer = build_optimizer("sgd", params, lr=0.1)
    resumed = cyclic_cosine_scheduler(resumed_optimizer, 10, 0.1, 1e-6)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(cyclic_cosine_lr(25, 10, 0.1, 1e-6))
    resumed_optimizer.step()
    resumed.step()
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(cyclic_cosine_lr(26, 10, 0.1, 1e-6))


def test_build_optimizer() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    adam = build_optimizer("adam", params, lr=1e-3)
    sgd = build_optimizer("sgd", params, lr=0.1, weight_decay=1e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4


def test_sgd_nesterov_steps_as_torch() -> None:
    start = torch.tensor([1.0, -2.0, 0.5])
    ours_param, torch_param, plain_param = (torch.nn.Parameter(start.clone()) for _ in range(3))
    ours = build_optimizer("sgd", [ours_param], lr=0.1, nesterov=True)
    reference = torch.optim.SGD([torch_param], lr=0.1, momentum=0.9, nesterov=True)
    plain = build_optimizer("sgd", [plain_param], lr=0.1)
    assert ours.param_groups[0]["nesterov"] is True and plain.param_groups[0]["nesterov"] is False
    for _ in range(3):
        for optimizer, param in ((ours, ours_param), (reference, torch_param), (plain, plain_param)):
            optimizer.zero_grad()
            (param**2).sum().backward()
            optimizer.step()
    assert torch.equal(ours_param, torch_param)
    assert not torch.allclose(ours_param, plain_param)


def test_optimiser_update_is_fused_only_on_cuda() -> None:
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert fused_update(cpu) is None and not build_optimizer("adam", cpu, lr=1e-3).defaults["fused"]
    assert fused_update([SimpleNamespace(device=torch.device("cuda", 0))] * 2) is True  # only .device is read
    assert fused_update([SimpleNamespace(device=torch.device("cuda", 0)), *cpu]) is None
    assert fused_update([]) is None
