import copy

import pytest
import torch
import torch.nn.functional as F

from fsdlib.errors import FsdError
from fsdlib.models import EnvNetV2, MultitaskHeads, ResNet, TaggingModel, build_model, resnet34

N_MELS = 128
N_CLASSES = 80
FRAMES_30S = 3810
SAMPLES_30S = 30 * 44_100


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_resnet_model() -> TaggingModel:
    return build_model("resnet", N_CLASSES, multitask=True).eval()


@pytest.fixture(scope="module")
def paper_resnet(paper_resnet_model: TaggingModel) -> ResNet:
    return paper_resnet_model.backbone


@pytest.fixture(scope="module")
def paper_envnet_model() -> TaggingModel:
    return build_model("envnet", N_CLASSES, multitask=True).eval()


@pytest.fixture(scope="module")
def paper_envnet(paper_envnet_model: TaggingModel) -> EnvNetV2:
    return paper_envnet_model.backbone


def test_resnet34_is_the_standard_network() -> None:
    # torchvision's resnet34 has 21,797,672 parameters: minus its 1000-class fc (513,000) and
    # minus two of three stem input channels (2 × 7 × 7 × 64 = 6,272).
    assert _count(resnet34()) == 21_797_672 - 513_000 - 6_272 == 21_278_400


@pytest.mark.parametrize("frames", [1, 7, 100, 512])
def test_resnet_any_length(paper_resnet: ResNet, frames: int) -> None:
    with torch.no_grad():
        features = paper_resnet(torch.randn(2, 1, N_MELS, frames))
    assert features.shape == (2, 512) == (2, paper_resnet.out_features)


def test_resnet_30_seconds_through_the_heads(paper_resnet_model: TaggingModel) -> None:
    with torch.no_grad():
        curated, noisy = paper_resnet_model(torch.randn(1, 1, N_MELS, FRAMES_30S))
    assert curated.shape == noisy.shape == (1, N_CLASSES) and torch.isfinite(curated).all()


def test_narrow_resnet_trains_on_a_short_batch() -> None:
    net = ResNet(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128))
    features = net(torch.randn(2, 1, N_MELS, 3))
    features.sum().backward()
    assert features.shape == (2, 128) and net.out_features == 128


def test_resnet_needs_four_stages() -> None:
    with pytest.raises(FsdError):
        ResNet(layers=(1, 1, 1), widths=(8, 16, 32))


def test_envnet_min_samples() -> None:
    # conv1 s2, conv2 s2 and the 1×64 pool give 80 columns for conv3 (8×8) onward.
    assert EnvNetV2().min_samples == 20_570
    assert EnvNetV2(width=0.25).min_samples == 20_570


@pytest.mark.parametrize("samples", [1, 1_000, 20_569, 20_570, 133_300])
def test_envnet_feature_shape(paper_envnet: EnvNetV2, samples: int) -> None:
    with torch.no_grad():
        features = paper_envnet(torch.rand(2, samples) * 2 - 1)
    assert features.shape == (2, 2560) == (2, paper_envnet.out_features)


@pytest.mark.parametrize("samples", [1_000, 133_300, SAMPLES_30S])
def test_envnet_through_the_heads(paper_envnet_model: TaggingModel, samples: int) -> None:
    with torch.no_grad():
        curated, noisy = paper_envnet_model(torch.rand(1, samples) * 2 - 1)
    assert curated.shape == noisy.shape == (1, N_CLASSES) and torch.isfinite(curated).all()


def test_envnet_pads_short_input_centred(paper_envnet: EnvNetV2) -> None:
    wave = torch.rand(1, 5_000) * 2 - 1
    short = paper_envnet.min_samples - 5_000
    padded = torch.nn.functional.pad(wave, (short // 2, short - short // 2))
    with torch.no_grad():
        assert torch.allclose(paper_envnet(wave), paper_envnet(padded))


def test_narrow_envnet_keeps_the_swap_height() -> None:
    net = EnvNetV2(width=0.25)
    assert net.conv2[0].out_channels == 64 and net.conv1[0].out_channels == 8
    assert net.out_features == 10 * 64
    features = net(torch.rand(2, 30_000) * 2 - 1)
    assert features.shape == (2, 640)


def test_heads_identical_and_return_logits() -> None:
    heads = MultitaskHeads(2560, N_CLASSES)
    shapes = [p.shape for p in heads.curated.parameters()]
    assert shapes == [p.shape for p in heads.noisy.parameters()]
    assert shapes[0] == (1024, 2560) and shapes[-1] == (N_CLASSES,)
    curated, noisy = heads.eval()(torch.randn(3, 2560) * 10)
    assert curated.shape == noisy.shape == (3, N_CLASSES)
    assert (curated < 0).any() or (curated > 1).any()  # logits, not probabilities


def test_single_task_has_no_noisy_head() -> None:
    heads = MultitaskHeads(64, N_CLASSES, hidden=32, multitask=False)
    assert heads.noisy is None
    assert not any(name.startswith("noisy") for name, _ in heads.named_parameters())
    assert heads(torch.randn(2, 64))[1] is None


def test_tagging_model_forward_and_predict() -> None:
    model = TaggingModel(ResNet(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16)), MultitaskHeads(16, 5, hidden=32)).eval()
    x = torch.randn(4, 1, N_MELS, 40)
    curated, noisy = model(x)
    assert curated.shape == noisy.shape == (4, 5)
    assert torch.allclose(model.predict(x, "sigmoid"), torch.sigmoid(curated))
    probabilities = model.predict(x, "softmax")
    assert torch.allclose(probabilities.sum(-1), torch.ones(4))


def test_build_model_paper_and_demo() -> None:
    paper = build_model("resnet", N_CLASSES, multitask=True)
    heads = 2 * (512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * N_CLASSES + N_CLASSES)
    assert _count(paper) == 21_278_400 + heads

    demo = build_model("resnet", 10, multitask=False, layers=[1, 1, 1, 1], widths=[16, 32, 64, 128], hidden=64)
    assert demo.heads.noisy is None and demo.heads.curated[0].in_features == 128

    envnet = build_model("envnet", 10, multitask=True, width=0.25, hidden=32, dropouts=[0.0, 0.0])
    curated, noisy = envnet(torch.rand(2, 21_000) * 2 - 1)
    assert curated.shape == noisy.shape == (2, 10)
    assert _count(EnvNetV2()) == 374_848


def test_build_model_rejects_bad_settings() -> None:  # the family itself is checked by ModelSpec (test_settings.py)
    with pytest.raises(FsdError):
        build_model("envnet", 10, multitask=True, layers=(1, 1, 1, 1))


def test_head_last_layer_in_float32_under_autocast() -> None:
    torch.manual_seed(0)
    heads = MultitaskHeads(64, N_CLASSES, hidden=32).eval()
    features = torch.randn(5, 64) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        curated, noisy = heads(features)
        penultimate = torch.nn.Sequential(*list(heads.curated)[:-1])(features)
    assert curated.dtype == noisy.dtype == torch.float32 and penultimate.dtype == torch.bfloat16
    last = heads.curated[-1]
    reference = F.linear(penultimate.float(), last.weight, last.bias)
    assert torch.allclose(curated, reference, rtol=1e-6, atol=1e-6)


def test_head_large_logits_keep_distinct_sigmoids_under_autocast() -> None:
    heads = MultitaskHeads(16, N_CLASSES, hidden=8, multitask=False).eval()
    with torch.no_grad():
        heads.curated[-1].weight.zero_()
        heads.curated[-1].bias.copy_(6.3 + 0.01 * torch.arange(N_CLASSES))
    plain = torch.nn.Sequential(*copy.deepcopy(list(heads.curated)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = heads(torch.randn(2, 16))
        bf16_logits = plain(torch.randn(2, 16))
    assert torch.sigmoid(logits).unique(dim=-1).shape[-1] == N_CLASSES
    assert torch.sigmoid(bf16_logits).unique(dim=-1).shape[-1] < N_CLASSES // 4  # what the float32 layer prevents


def test_head_without_autocast_is_the_plain_sequential() -> None:
    heads = MultitaskHeads(64, N_CLASSES, hidden=32)
    assert list(heads.curated.state_dict()) == [f"{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    features = torch.randn(7, 64)
    torch.manual_seed(1)
    ours = heads.curated(features)
    torch.manual_seed(1)
    plain = torch.nn.Sequential(*list(heads.curated))(features)
    assert torch.equal(ours, plain)
