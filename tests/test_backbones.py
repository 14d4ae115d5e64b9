from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfa_ray.method import backbones, checkpoints
from dfa_ray.method.model import ModelConfig, PoseModel, create_model

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
# Real photos (tests/fixtures/photos/SOURCES.md) and their ImageNet classes.
CLASSES = {"baboon.jpg": 372, "butterfly.jpg": 323}


def _photos() -> torch.Tensor:
    images = [cv2.cvtColor(cv2.imread(str(PHOTOS / name)), cv2.COLOR_BGR2RGB) for name in CLASSES]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def imagenet_state():
    return backbones.efficientnet_lite0_weights()


def _classify(state) -> list[int]:
    model = backbones.EfficientNetLite0(stages=7, classifier=True)
    backbones.load_matching(model, state, "test weights")
    with torch.no_grad():
        return model.eval()(_photos()).argmax(-1).tolist()


def test_shipped_imagenet_weights_classify_real_photos(imagenet_state):
    assert _classify(imagenet_state) == list(CLASSES.values())


def test_a_mis_mapped_weight_is_caught_by_the_classification(imagenet_state):
    # Two depthwise kernels of the same shape, exchanged: every key is present and every shape
    # matches, so only what the network computes can tell. This is what the test above guards.
    state = dict(imagenet_state)
    a, b = "_blocks.6._depthwise_conv.weight", "_blocks.7._depthwise_conv.weight"
    assert state[a].shape == state[b].shape
    state[a], state[b] = state[b], state[a]
    assert _classify(state) != list(CLASSES.values())


def test_a_missing_or_misshapen_key_is_an_error_naming_it(imagenet_state):
    state = dict(imagenet_state)
    state["_blocks.3._project_conv.weight_renamed"] = state.pop("_blocks.3._project_conv.weight")
    with pytest.raises(ValueError, match=r"_blocks\.3\._project_conv\.weight"):
        _classify(state)
    state = dict(imagenet_state)
    state["_bn0.weight"] = torch.ones(16)
    with pytest.raises(ValueError, match=r"_bn0\.weight \(16,\) != \(32,\)"):
        _classify(state)


def test_pose_model_on_efficientnet_starts_from_imagenet_and_checkpoints_roundtrip(imagenet_state):
    config = ModelConfig(backbone="efficientnet_lite0", pretrained="imagenet", input_size=64, heatmap_size=16)
    model = create_model(config)
    torch.testing.assert_close(
        model.encoder._blocks[4]._depthwise_conv.weight, imagenet_state["_blocks.4._depthwise_conv.weight"]
    )
    out = model(torch.rand(2, 3, 64, 64))
    assert out.xy.shape == out.zy.shape == out.xz.shape == (2, 17, 16, 16)
    # A checkpoint rebuilds the same network without reading the pretrained weights again.
    rebuilt, _ = checkpoints.from_bytes(checkpoints.to_bytes(model))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value)
    assert not torch.equal(
        PoseModel(config).encoder._blocks[4]._depthwise_conv.weight,
        model.encoder._blocks[4]._depthwise_conv.weight,
    )


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_layout_resnet_loads_a_state_dict_file_and_runs_at_stride_8(tmp_path, name):
    # A torchvision-layout state_dict as a user's file would hold it, classifier head included.
    source = backbones.TorchvisionResNet(name)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, source.out_channels), torch.zeros(1000)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    config = ModelConfig(backbone=name, pretrained=str(path), input_size=64, heatmap_size=16)
    model = create_model(config)
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, state[key])
    features = model.encoder(torch.rand(1, 3, 64, 64))
    assert features.shape == (1, source.out_channels, 8, 8)  # stride 8
    assert model(torch.rand(1, 3, 64, 64)).xy.shape == (1, 17, 16, 16)


def test_efficientnet_at_stride_8_is_the_stride_16_encoder_computed_densely(imagenet_state):
    """Dilating the stride-16 stages keeps every ImageNet weight's meaning: on the cells the strided
    network samples (TF 'SAME' padding centres them on the odd fine cells) the features are equal."""
    coarse, dense = backbones.EfficientNetLite0(), backbones.EfficientNetLite0(output_stride=8)
    for encoder in (coarse, dense):
        backbones.load_matching(encoder, imagenet_state, "test weights")
    with torch.no_grad():
        coarse_features, dense_features = coarse.eval()(_photos()), dense.eval()(_photos())
    assert dense.stride == 8 and dense_features.shape[-1] == 2 * coarse_features.shape[-1]
    torch.testing.assert_close(dense_features[..., 1::2, 1::2], coarse_features, atol=1e-4, rtol=1e-4)
    model = create_model(ModelConfig(backbone="efficientnet_lite0", output_stride=8, heatmap_size=16))
    assert model(torch.rand(2, 3, 64, 64)).xy.shape == (2, 17, 16, 16)


def test_bad_pretrained_settings_are_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="only efficientnet_lite0 has a choice"):
        ModelConfig(backbone="resnet50", output_stride=8)
    with pytest.raises(ValueError, match="only efficientnet_lite0 has a choice"):
        ModelConfig(backbone="efficientnet_lite0", output_stride=4)
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        ModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="trains from scratch"):
        ModelConfig(pretrained="imagenet")
    with pytest.raises(ValueError, match="resnet50 ships no weights"):
        create_model(ModelConfig(backbone="resnet50", pretrained="imagenet"))
    text = tmp_path / "weights.pth"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a torch state_dict"):
        create_model(ModelConfig(backbone="resnet18", pretrained=str(text)))
    with pytest.raises(ValueError, match="cannot be read"):
        create_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "missing.pth")))
