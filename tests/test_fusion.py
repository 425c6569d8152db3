"""Inference copies: batch norms folded into convolutions give the same predictions; the original is untouched."""

import pytest
import torch
from torch import nn

from fsdlib.models import build_model
from fsdlib.models.fusion import fold_batch_norms

ARCHS = {
    "resnet": ({"layers": [2, 1, 1, 1], "widths": [8, 16, 16, 32], "hidden": 16}, (3, 1, 128, 70)),
    "envnet": ({"width": 0.125, "hidden": 16}, (3, 30000)),
}


def _model_with_statistics(family: str) -> nn.Module:
    """A model in eval mode whose batch norms have non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = build_model(family, 5, True, **ARCHS[family][0])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.3, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("family", ["resnet", "envnet"])
def test_folded_copy_predicts_the_same(family: str) -> None:
    model = _model_with_statistics(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    copy = model.for_inference()
    x = torch.randn(ARCHS[family][1])
    with torch.no_grad():
        expected, folded = model.backbone(x), copy.backbone(x)
        assert torch.allclose(model.predict(x), copy.predict(x), atol=1e-6)
    assert torch.allclose(expected, folded, atol=1e-5 * float(expected.abs().max()))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn  # the original keeps its layers
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in copy.parameters())


def test_every_resnet_batch_norm_is_folded() -> None:
    model = _model_with_statistics("resnet")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batch_norms(model) == n_bn  # stem, both convs of each block and the projection shortcuts


def test_folding_needs_eval_mode() -> None:
    model = _model_with_statistics("envnet").train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model)


def test_an_inference_copy_is_made_once() -> None:
    """Preparing a prepared network returns it unchanged (no second deep copy per call), a trained one is copied."""
    model = _model_with_statistics("resnet")
    ready = model.for_inference()
    assert ready is not model and ready.for_inference() is ready
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
