"""QualityNet: shapes, axis order, saliency weighting, weight loading, training."""
import os
import urllib.error

import pytest
import torch
import torchvision

from VQA import QualityNet, build_quality_model, saliency_weight, sinusoidal_positions

B, T, H, W = 2, 4, 64, 112


def clip(seed: int = 0, batch: int = B, length: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frames (B, T, 3, H, W) and saliency maps (B, T, 1, H, W) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, length, 3, H, W, generator=generator),
            torch.rand(batch, length, 1, H, W, generator=generator))


def tiny_model(**kwargs) -> QualityNet:
    torch.manual_seed(0)
    return QualityNet(**{"backbone": "resnet18", "weights": None, **kwargs}).eval()


@pytest.mark.parametrize("variant", ["spatial", "temporal", "fusion"])
def test_every_variant_scores_each_clip(variant):
    frames, saliency = clip()
    with torch.no_grad():
        scores = tiny_model(variant=variant)(frames, saliency)
    assert scores.shape == (B,)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50"])
def test_larger_backbones_score_each_clip(backbone):
    frames, saliency = clip(batch=1, length=2)
    with torch.no_grad():
        scores = tiny_model(backbone=backbone)(frames, saliency)
    assert scores.shape == (1,)


def test_unknown_backbone_or_variant_is_rejected():
    with pytest.raises(ValueError, match="backbone"):
        QualityNet(backbone="vgg16", weights=None)
    with pytest.raises(ValueError, match="variant"):
        QualityNet(backbone="resnet18", variant="both", weights=None)


def test_frame_features_pair_each_frame_with_its_own_map_and_channels():
    """A reshape across the colour/time axes anywhere before the trunk would feed the trunk
    frames mixed from other time steps or channels: compare every (b, t) slot with the trunk
    run on that one frame, taken by explicit indexing and normalised by hand."""
    model = tiny_model(saliency_alpha=0.5, saliency_floor=0.1)
    frames, saliency = clip(seed=1, length=3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        features = model.frame_features(frames, saliency)
        for b in range(B):
            for t in range(3):
                weighted = frames[b, t] * (0.5 + 0.5 * saliency[b, t].clamp(min=0.1))
                alone = model.trunk(((weighted - mean) / std)[None]).mean(dim=(2, 3))[0]
                torch.testing.assert_close(features[b, t], alone, rtol=1e-4, atol=1e-5)


def test_spatial_variant_ignores_frame_order_but_temporal_does_not():
    frames, saliency = clip(seed=2)
    order = torch.tensor([3, 1, 0, 2])
    with torch.no_grad():
        spatial = tiny_model(variant="spatial")
        torch.testing.assert_close(spatial(frames, saliency),
                                   spatial(frames[:, order], saliency[:, order]))
        temporal = tiny_model(variant="temporal")
        assert not torch.allclose(temporal(frames, saliency),
                                  temporal(frames[:, order], saliency[:, order]))


def test_saliency_weight_on_a_hand_case():
    frames = torch.full((1, 1, 3, 1, 4), 0.8)
    saliency = torch.tensor([0.0, 0.05, 0.5, 1.0]).view(1, 1, 1, 1, 4)
    weighted = saliency_weight(frames, saliency, alpha=0.5, floor=0.1)
    # w = [0.1, 0.1, 0.5, 1.0] -> factor 0.5 + 0.5 w = [0.55, 0.55, 0.75, 1.0], all channels
    expected = torch.tensor([0.44, 0.44, 0.6, 0.8]).expand(1, 1, 3, 1, 4)
    torch.testing.assert_close(weighted, expected)


def test_alpha_zero_switches_saliency_off():
    model = tiny_model(saliency_alpha=0.0)
    frames, saliency = clip(seed=3)
    with torch.no_grad():
        plain = model(frames, None)
        torch.testing.assert_close(model(frames, saliency), plain)
        torch.testing.assert_close(model(frames, 1 - saliency), plain)


def test_saliency_changes_the_score_when_on():
    model = tiny_model(saliency_alpha=0.5)
    frames, saliency = clip(seed=4)
    with torch.no_grad():
        assert not torch.allclose(model(frames, saliency), model(frames, 1 - saliency))


def test_missing_or_misshapen_saliency_is_an_error():
    model = tiny_model(saliency_alpha=0.5)
    frames, saliency = clip()
    with pytest.raises(ValueError, match="saliency"):
        model(frames, None)
    with pytest.raises(ValueError, match="saliency"):
        model(frames, saliency[:, :-1])


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(5)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    loaded = QualityNet(backbone="resnet18", weights=str(path))
    torch.testing.assert_close(loaded.trunk.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(loaded.trunk.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    assert not torch.allclose(tiny_model().trunk.conv1.weight, state["conv1.weight"])


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        QualityNet(backbone="resnet18", weights=tmp_path / "nothing.pth")


def test_imagenet_weights_come_from_torchvision_file(monkeypatch):
    torch.manual_seed(6)
    state = torchvision.models.resnet18(weights=None).state_dict()
    asked = []

    def fake_load(url, **kwargs):
        asked.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_load)
    model = QualityNet(backbone="resnet18", weights="imagenet")
    assert [os.path.basename(url) for url in asked] == ["resnet18-f37072fd.pth"]
    torch.testing.assert_close(model.trunk.conv1.weight, state["conv1.weight"])


def test_unavailable_imagenet_weights_say_how_to_proceed(monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as error:
        QualityNet(backbone="resnet50", weights="imagenet")
    message = str(error.value)
    assert "resnet50-0676ba61.pth" in message
    assert os.path.join(torch.hub.get_dir(), "checkpoints") in message
    assert "--weights" in message and "--no-pretrained" in message


def test_config_rebuilds_the_same_model():
    model = tiny_model(variant="fusion", saliency_alpha=0.3)
    rebuilt = build_quality_model(**{**model.config, "weights": None}).eval()
    rebuilt.load_state_dict(model.state_dict())
    frames, saliency = clip(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(frames, saliency), model(frames, saliency))


def test_channels_last_gives_the_same_scores():
    model = tiny_model()
    frames, saliency = clip(seed=8)
    with torch.no_grad():
        plain = model(frames, saliency)
        model.to_channels_last()
        assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(frames, saliency), plain, rtol=1e-4, atol=1e-5)


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    model = tiny_model(variant="fusion")
    frames, saliency = clip(seed=9)
    with torch.no_grad():
        torch.testing.assert_close(model(frames, saliency), model(frames, saliency), rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(frames, saliency), model(frames, saliency))


def test_position_code_values():
    code = sinusoidal_positions(3, 4)
    assert code.shape == (3, 4)
    torch.testing.assert_close(code[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    # feature pair i runs at frequency 10000^(-2i/dim): 1 and 1/100 for dim 4
    torch.testing.assert_close(code[2], torch.tensor([torch.sin(torch.tensor(2.0)).item(),
                                                      torch.cos(torch.tensor(2.0)).item(),
                                                      0.02 - 0.02 ** 3 / 6,
                                                      1 - 0.02 ** 2 / 2]))


@pytest.mark.slow
def test_a_few_sgd_steps_lower_the_loss():
    model = tiny_model(variant="fusion", dropout=0.0).train()
    frames, saliency = clip(seed=10)
    target = torch.tensor([0.2, 0.9])
    first_conv = model.trunk.conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(model(frames, saliency), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    assert not torch.equal(model.trunk.conv1.weight, first_conv)  # gradients reach the trunk
