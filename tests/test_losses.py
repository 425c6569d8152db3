import math
import warnings

import torch
import torch.nn.functional as F

from fsdlib.losses import bce_loss, head_loss, kl_softmax_loss, multitask_loss, spl_mse_loss


def test_bce_equals_torch_reference_on_raw_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g) * 3
    targets = (torch.rand(8, 5, generator=g) < 0.3).float()
    reference = F.binary_cross_entropy(torch.sigmoid(logits), targets)
    assert torch.isclose(bce_loss(logits, targets), reference, atol=1e-6)
    assert torch.equal(head_loss(logits, targets, "sigmoid"), bce_loss(logits, targets))


def test_kl_known_values() -> None:
    # Uniform logits over 4 classes, two positive labels: q = (1/2, 1/2, 0, 0), KL = log 2.
    logits = torch.zeros(1, 4)
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert math.isclose(kl_softmax_loss(logits, targets).item(), math.log(2), rel_tol=1e-6)
    # A target equal to the prediction gives 0; un-normalised targets are normalised first.
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert abs(kl_softmax_loss(logits, torch.tensor([[0.4, 0.6, 1.0]])).item()) < 1e-6
    # One-hot target: KL = -log p(class); averaged over rows.
    logits = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert math.isclose(kl_softmax_loss(logits, torch.tensor([[0.0, 1.0], [1.0, 0.0]])).item(), expected, rel_tol=1e-6)
    assert torch.equal(head_loss(logits, torch.eye(2), "softmax"), kl_softmax_loss(logits, torch.eye(2)))


def test_kl_zero_target_row_is_finite_with_finite_gradient() -> None:
    logits = torch.zeros(2, 4, requires_grad=True)
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    loss = kl_softmax_loss(logits, targets)
    loss.backward()
    assert math.isclose(loss.item(), math.log(2) / 2, rel_tol=1e-6)
    assert torch.isfinite(logits.grad).all() and (logits.grad[0] == 0).all()


def test_spl_mse_on_sigmoid() -> None:
    logits = torch.tensor([[0.0, 100.0]])
    assert math.isclose(spl_mse_loss(logits, torch.tensor([[0.0, 1.0]])).item(), 0.125, rel_tol=1e-6)


def test_multitask_weights() -> None:
    g = torch.Generator().manual_seed(1)
    c_logits, n_logits, s_logits = (torch.randn(4, 6, generator=g) for _ in range(3))
    c_targets, n_targets = ((torch.rand(4, 6, generator=g) < 0.3).float() for _ in range(2))
    s_targets = torch.softmax(torch.randn(4, 6, generator=g), -1)

    total, parts = multitask_loss(c_logits, c_targets, None, None, "sigmoid")
    assert parts.keys() == {"curated"} and torch.isclose(total, bce_loss(c_logits, c_targets))

    total, parts = multitask_loss(c_logits, c_targets, n_logits, n_targets, "sigmoid", noisy_weight=0.5)
    assert math.isclose(total.item(), parts["curated"] + 0.5 * parts["noisy"], rel_tol=1e-6)
    assert math.isclose(parts["noisy"], bce_loss(n_logits, n_targets).item(), rel_tol=1e-6)

    total, parts = multitask_loss(
        c_logits, c_targets, n_logits, n_targets, "softmax", spl_logits=s_logits, spl_targets=s_targets
    )
    assert math.isclose(parts["spl"], spl_mse_loss(s_logits, s_targets).item(), rel_tol=1e-6)
    assert math.isclose(total.item(), parts["curated"] + parts["noisy"] + 20 * parts["spl"], rel_tol=1e-6)
    assert math.isclose(parts["curated"], kl_softmax_loss(c_logits, c_targets).item(), rel_tol=1e-6)


def test_multitask_total_backpropagates() -> None:
    logits = torch.zeros(2, 3, requires_grad=True)
    total, _ = multitask_loss(logits, torch.ones(2, 3), logits, torch.zeros(2, 3), "sigmoid")
    total.backward()
    assert torch.allclose(logits.grad, torch.zeros(2, 3), atol=1e-7)  # the two heads' pulls cancel


def _kl_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 10, generator=g) * 2
    targets = (torch.rand(6, 10, generator=g) < 0.3).float()
    targets[0] = 0.0
    targets[1, 2] = 1.0
    q = targets / targets.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return logits, targets, q


def test_kl_reductions_match_torch_kldivloss() -> None:
    logits, targets, q = _kl_batch()
    log_p = F.log_softmax(logits, dim=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that 'mean' divides by batch x classes: the authors' scale
        authors = torch.nn.KLDivLoss()(log_p, q)
    row_sum = torch.nn.KLDivLoss(reduction="batchmean")(log_p, q)
    assert torch.isclose(kl_softmax_loss(logits, targets, "authors"), authors, rtol=1e-6, atol=1e-7)
    assert torch.isclose(kl_softmax_loss(logits, targets, "row_sum"), row_sum, rtol=1e-6, atol=1e-7)
    assert torch.equal(kl_softmax_loss(logits, targets), kl_softmax_loss(logits, targets, "row_sum"))
    assert torch.isclose(authors * 10, row_sum, rtol=1e-5)  # 1/n_classes of the per-row sum


def test_bce_is_torch_default_under_both_reductions() -> None:
    logits, targets, _ = _kl_batch()
    reference = torch.nn.BCEWithLogitsLoss()(logits, targets)
    for reduction in ("authors", "row_sum"):
        assert torch.equal(head_loss(logits, targets, "sigmoid", reduction), reference)


def test_reduction_threads_through_multitask_loss() -> None:
    logits, targets, _ = _kl_batch()
    noisy_targets = targets.flip(0)
    total, parts = multitask_loss(logits, targets, logits, noisy_targets, "softmax", reduction="authors")
    assert math.isclose(parts["curated"], kl_softmax_loss(logits, targets, "authors").item(), rel_tol=1e-6)
    assert math.isclose(parts["noisy"], kl_softmax_loss(logits, noisy_targets, "authors").item(), rel_tol=1e-6)
    default_total, default_parts = multitask_loss(logits, targets, logits, noisy_targets, "softmax")
    assert math.isclose(default_parts["curated"], 10 * parts["curated"], rel_tol=1e-5)
    assert math.isclose(default_total.item(), 10 * total.item(), rel_tol=1e-5)


