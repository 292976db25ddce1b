"""ImageNet ResNet-50 weights inflated into the 3-D backbones: the I3D property, what loads, what not.

The 2-D net is torchvision's ``resnet50(weights=None)`` with random weights and BatchNorm
statistics, saved to a temp file and read back ``weights_only=True``: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import a2model
from a2model.inflate import inflate_from_2d

SIDE = 32  # a small input: the property holds at any size, and float64 r50 is fast at 32²


def randomised(net: nn.Module) -> nn.Module:
    """``net`` with random BatchNorm affine parameters and running statistics (eval mode, float64)."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in (
                (module.running_mean, -0.5, 0.5),
                (module.running_var, 0.5, 2.0),
                (module.weight.data, 0.5, 1.5),
                (module.bias.data, -0.2, 0.2),
            ):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return net.double().eval()


@pytest.fixture(scope="module")
def resnet50_2d(tmp_path_factory) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A random 2-D ResNet-50 and its state dict as read back from a ``.pth`` file."""
    torch.manual_seed(0)
    net = randomised(torchvision.models.resnet50(weights=None))
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(net.state_dict(), path)
    return net, torch.load(path, weights_only=True)


def features_2d(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision ResNet's layer4 output on ``x`` (N, C, H, W)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def inflated(name: str, state_dict: dict, mode: str = "centre", num_classes: int = 1000) -> nn.Module:
    net = a2model.build_model(name, num_classes).double().eval()
    report = inflate_from_2d(net, state_dict, mode)
    assert report.backbone_loaded and not report.mismatched and not report.unexpected, report.summary()
    return net


@pytest.mark.parametrize("name", ["r50_plain", "r50_a2"])
def test_centre_inflation_gives_the_2d_logits_on_a_clip_of_identical_frames(resnet50_2d, name) -> None:
    net_2d, state_dict = resnet50_2d
    net = inflated(name, state_dict, "centre")
    frame = torch.randn(2, 3, SIDE, SIDE, dtype=torch.float64)
    clip = frame[:, :, None].expand(-1, -1, 4, -1, -1)
    with torch.no_grad():
        assert (net(clip) - net_2d(frame)).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["r50_plain", "r50_a2"])
def test_mean_inflation_gives_the_2d_features_where_the_temporal_padding_does_not_reach(resnet50_2d, name) -> None:
    """res4 and res5 hold 9 convolutions with a temporal kernel of 3, each reaching one more time
    step in from either end: of 20 identical frames, steps 9 and 10 see no zero padding."""
    net_2d, state_dict = resnet50_2d
    net = inflated(name, state_dict, "mean")
    frame = torch.randn(1, 3, SIDE, SIDE, dtype=torch.float64)
    with torch.no_grad():
        features = net.stages(net.stem(frame[:, :, None].expand(-1, -1, 20, -1, -1)))
        expected = features_2d(net_2d, frame)
    for step in (9, 10):
        assert (features[:, :, step] - expected).abs().max() <= 1e-6
    assert (features[:, :, 0] - expected).abs().max() > 1e-3  # the padding does reach the ends


@pytest.mark.parametrize("name", ["resnet50", "a2_resnet50"])
def test_the_image_models_take_the_weights_as_they_are(resnet50_2d, name) -> None:
    net_2d, state_dict = resnet50_2d
    net = inflated(name, state_dict)
    image = torch.randn(2, 3, SIDE, SIDE, dtype=torch.float64)
    with torch.no_grad():
        assert (net(image) - net_2d(image)).abs().max() <= 1e-6


def test_the_classifier_is_copied_only_when_the_class_count_matches(resnet50_2d) -> None:
    _, state_dict = resnet50_2d
    net = a2model.build_model("r50_a2", 400)
    head = net.fc.weight.detach().clone()
    report = inflate_from_2d(net, state_dict)
    assert report.backbone_loaded and torch.equal(net.fc.weight, head)
    assert report.mismatched == ["fc.weight: (1000, 2048) → (400, 2048)", "fc.bias: (1000,) → (400,)"]
    assert {key.split(".")[0] for key in report.new_blocks} == {"stages"} and len(report.new_blocks) == 40
    assert "inflated 318 tensors" in report.summary()


def test_excluded_keys_keep_their_initialisation(resnet50_2d) -> None:
    _, state_dict = resnet50_2d
    net = a2model.build_model("r50_plain", 1000)
    head, stem = net.fc.weight.detach().clone(), net.stem[0].weight.detach().clone()
    report = inflate_from_2d(net, state_dict, exclude=["fc.*"])
    assert report.excluded == ["fc.weight", "fc.bias"] and report.backbone_loaded
    assert torch.equal(net.fc.weight, head) and not torch.equal(net.stem[0].weight, stem)
    assert report.unexpected == ["fc.bias", "fc.weight"]


def test_another_architecture_is_reported_and_the_backbone_does_not_count_as_loaded(tmp_path: Path) -> None:
    """resnet18's stem fits r50's, its basic blocks do not: the report names the misfits."""
    state_dict = torchvision.models.resnet18(weights=None).state_dict()
    report = inflate_from_2d(a2model.build_model("r50_plain", 1000), state_dict)
    assert not report.backbone_loaded
    assert "stem.0.weight" in report.loaded
    assert "stages.0.0.conv_a.weight: (64, 64, 3, 3) → (64, 64, 1, 1, 1)" in report.mismatched
    assert "stages.0.0.conv_c.weight" in report.missing  # resnet18 has no conv3
    assert "mismatched: " in report.summary()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'centre' or 'mean'"):
        inflate_from_2d(a2model.build_model("r50_plain", 10), {}, mode="middle")
