"""UNet3D baseline and its register variants (design.md, section 4), at tiny widths on CPU."""
from __future__ import annotations

import pytest
import torch

from sal_withoutreg import UNet3D, fold_batchnorm
from sal_withreg import ColourRead, RegisterUNet3D, build_saliency_model

WIDTH = 4
HEIGHT, WIDTH_PX = 33, 47  # odd, not multiples of 16
MODES = ("attention", "input")
WRITES = ("mix", "film", "token")


def clip(batch: int = 2, frames: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, frames, HEIGHT, WIDTH_PX,
                      generator=torch.Generator().manual_seed(seed))


def randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode tests see real BN."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2
            module.running_var.data = torch.rand(module.running_var.shape, generator=generator) + 0.5
            module.weight.data += 1


def make_write_nonzero(model: RegisterUNet3D) -> None:
    """Give every write-back (mix output, FiLM gains, token write projection, colour contrast)
    non-zero weights, as training would."""
    for write in getattr(model, "register_films", {}).values():
        torch.nn.init.normal_(write.out.weight if hasattr(write, "out") else write.gains.weight,
                              std=0.5)
    for block in model.register_blocks.values():
        if hasattr(block, "write"):
            torch.nn.init.normal_(block.write.out.weight, std=0.5)
    if hasattr(model, "colour_read"):
        torch.nn.init.normal_(model.colour_read.contrast.weight, std=0.5)


@pytest.mark.parametrize("frames", [1, 6, 8])
@pytest.mark.parametrize("kwargs", [dict(registers=0), dict(register_mode="attention"),
                                    dict(register_mode="input"), dict(register_write="token"),
                                    dict(read_levels=["bottleneck", 3, "dec0"]),
                                    dict(write_levels=["dec3", "enc1"])])
def test_output_is_one_logit_map_per_input_frame(frames: int, kwargs: dict) -> None:
    model = build_saliency_model(WIDTH, **kwargs).eval()
    with torch.no_grad():
        logits = model(clip(frames=frames))
    assert logits.shape == (2, 1, frames, HEIGHT, WIDTH_PX)
    assert torch.isfinite(logits).all()


def test_parameter_count_at_width_64_matches_spec() -> None:
    with torch.device("meta"):
        model = UNet3D(64)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(96.2e6, abs=0.05e6)


def test_build_returns_baseline_for_zero_registers() -> None:
    assert type(build_saliency_model(WIDTH, registers=0)) is UNet3D
    assert isinstance(build_saliency_model(WIDTH, registers=2), RegisterUNet3D)


def test_zero_registers_is_the_baseline() -> None:
    torch.manual_seed(0)
    baseline = UNet3D(WIDTH).eval()
    randomise_batchnorm(baseline)
    for mode in MODES:
        model = RegisterUNet3D(WIDTH, registers=0, register_mode=mode).eval()
        assert model.state_dict().keys() == baseline.state_dict().keys()
        model.load_state_dict(baseline.state_dict())
        with torch.no_grad():
            assert torch.equal(model(clip()), baseline(clip()))


@pytest.mark.parametrize("write", WRITES)
def test_fresh_attention_model_behaves_like_the_baseline(write: str) -> None:
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=3, read_levels=["rgb", "bottleneck", 2, "dec1"],
                           register_write=write).eval()
    randomise_batchnorm(model)
    baseline = UNet3D(WIDTH).eval()
    baseline.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.equal(model(clip()), baseline(clip()))
        make_write_nonzero(model)
        assert not torch.allclose(model(clip()), baseline(clip()))


@pytest.mark.parametrize("mode, write", [("attention", "mix"), ("attention", "film"),
                                         ("attention", "token"), ("input", "mix")])
def test_registers_learn(mode: str, write: str) -> None:
    """Attention mode: the zero write-back (mix output, FiLM gains, token projection) hides the registers
    at step 0, but its own gradient is non-zero, so after one SGD step the registers receive
    gradient. Input mode: the registers feed the first convolution and get gradient at once."""
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=2, register_mode=mode, register_write=write)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for _ in range(2):
        optimiser.zero_grad()
        model(clip()).square().mean().backward()
        grads.append(model.registers.grad.abs().sum().item())
        optimiser.step()
    if mode == "attention":
        assert grads[0] == 0
    assert grads[1] > 0


@pytest.mark.parametrize("mode", MODES)
def test_eval_output_of_a_sample_does_not_depend_on_the_batch(mode: str) -> None:
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=2, register_mode=mode).eval()
    randomise_batchnorm(model)
    if mode == "attention":
        make_write_nonzero(model)
    first, others = clip(batch=1, seed=1), clip(batch=2, seed=2)
    with torch.no_grad():
        alone = model(first)
        together = model(torch.cat([first, others]))[:1]
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(registers=0), dict(register_mode="attention"),
                                    dict(register_write="token"), dict(register_mode="input")])
def test_folded_batchnorm_matches_eval_model(kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_saliency_model(WIDTH, **kwargs).eval()
    randomise_batchnorm(model)
    if isinstance(model, RegisterUNet3D) and model.register_mode == "attention":
        make_write_nonzero(model)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    with torch.no_grad():
        expected = model(clip())
        scale = expected.abs().max()
        torch.testing.assert_close(folded(clip()) / scale, expected / scale, rtol=0, atol=1e-4)


def test_input_mode_first_conv_takes_rgb_plus_register_channels() -> None:
    model = RegisterUNet3D(WIDTH, registers=5, register_mode="input")
    assert model.encoders[0][0].in_channels == 3 + 5
    planes = model.register_planes(clip(frames=10))
    assert planes.shape == (2, 5, 10, HEIGHT, WIDTH_PX)
    # 5 slots over 10 frames: each slot covers two frames, constant over pixels and the batch
    slots = model.register_to_slots(model.registers).detach()
    torch.testing.assert_close(planes[1, :, ::2, 7, 3], slots)
    torch.testing.assert_close(planes[0, :, 1::2, 0, 0], slots)


def test_returned_registers_depend_on_the_clip_in_attention_mode() -> None:
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=3).eval()
    with torch.no_grad():
        logits, registers = model(clip(seed=1), return_registers=True)
        _, other = model(clip(seed=2), return_registers=True)
    assert logits.shape == (2, 1, 6, HEIGHT, WIDTH_PX)
    assert registers.shape == (2, 3, 4 * WIDTH)
    assert not torch.allclose(registers, other)
    assert not torch.allclose(registers[0], registers[1])


def test_returned_registers_are_the_static_tokens_in_input_mode() -> None:
    model = RegisterUNet3D(WIDTH, registers=3, register_mode="input")
    _, registers = model(clip(), return_registers=True)
    assert registers.shape == (2, 3, 64)
    assert torch.equal(registers[1], model.registers)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="register_mode"):
        RegisterUNet3D(WIDTH, register_mode="output")
    with pytest.raises(ValueError, match="register level"):
        RegisterUNet3D(WIDTH, read_levels=["enc9"])
    with pytest.raises(ValueError, match="register_write"):
        RegisterUNet3D(WIDTH, register_write="sideways")
    with pytest.raises(ValueError, match="heads"):
        RegisterUNet3D(WIDTH, heads=3)


def test_film_writes_channel_gains_at_the_write_levels_and_token_writes_in_the_blocks() -> None:
    film = RegisterUNet3D(WIDTH, registers=2, register_write="film")
    assert list(film.register_films) == ["dec3", "dec2", "dec1", "dec0"]
    assert not any(hasattr(block, "write") for block in film.register_blocks.values())
    token = RegisterUNet3D(WIDTH, registers=2, register_write="token")
    assert not hasattr(token, "register_films")
    assert all(hasattr(block, "write") for block in token.register_blocks.values())
    # a FiLM gain scales a whole channel the same everywhere: the update is a per-channel factor
    features, registers = torch.rand(2, 8 * WIDTH, 3, 5, 7), torch.rand(2, 2, 4 * WIDTH)
    write = film.register_films["dec3"]
    torch.nn.init.normal_(write.gains.weight)
    ratio = write(features, registers) / features
    torch.testing.assert_close(ratio, ratio[..., :1, :1, :1].expand_as(ratio))


def test_a_mix_write_compares_each_position_with_the_registers() -> None:
    model = RegisterUNet3D(WIDTH, registers=2)
    assert list(model.register_blocks) == ["bottleneck"]  # with "rgb", the design's read levels
    assert isinstance(model.colour_read, ColourRead)
    write = model.register_films["dec0"]
    torch.nn.init.normal_(write.out.weight)
    features, registers = torch.rand(2, WIDTH, 3, 5, 7), torch.rand(2, 2, 4 * WIDTH)
    features[:, :, 1] = features[:, :, 0]  # two frames alike at every position
    update = write(features, registers) - features
    torch.testing.assert_close(update[:, :, 1], update[:, :, 0])  # a position's own features
    other = write(features, registers.flip(0)) - features  # ... and the clip's registers
    assert not torch.allclose(other, update)
    torch.testing.assert_close(write(features[:1], registers[1:]), features[:1] + other[:1])


@pytest.mark.parametrize("write", WRITES)
def test_training_every_write_stays_finite(write: str) -> None:
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=2, register_write=write)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(6):
        optimiser.zero_grad()
        loss = (model(clip(seed=step)) - 1).square().mean()
        loss.backward()
        optimiser.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_colour_contrast_is_each_positions_distance_from_what_each_register_gathered() -> None:
    torch.manual_seed(0)
    heads, registers, dim = 2, 3, 4 * WIDTH
    read = ColourRead(3, 2 * WIDTH, WIDTH, 2 * WIDTH, registers, dim, heads)
    pixels = clip(frames=4)
    pool = UNet3D(WIDTH).pool
    colours = read.colours(pixels, pool)
    features = torch.rand(2, 2 * WIDTH, *colours.shape[2:])
    assert colours.shape == (2, WIDTH, 3, HEIGHT // 2 + 1, WIDTH_PX // 2 + 1)
    state = torch.randn(2, registers, dim)
    updated, contrast = read(features, colours, state)
    assert updated.shape == state.shape and contrast.shape == (2, heads * registers, *colours.shape[2:])
    q, k, v = read._heads(features, colours, state)  # v: (B, heads, L, e)
    gathered = torch.softmax(q @ k.transpose(-2, -1) / (dim // heads) ** 0.5, dim=-1) @ v
    expected = (v[:, :, None] - gathered[:, :, :, None]).square().sum(-1)  # (B, heads, N, L)
    torch.testing.assert_close(contrast, expected.flatten(1, 2).unflatten(-1, colours.shape[2:]),
                               rtol=1e-4, atol=1e-4)
    # what a register gathers comes from the whole clip: recolouring one corner changes the
    # contrast at the far corner too, whose own colour and features stay the same
    recoloured = pixels.clone()
    recoloured[..., :3, :3] = torch.tensor([1.0, 0.0, 0.0])[:, None, None, None]
    _, other = read(features, read.colours(recoloured, pool), state)
    assert not torch.allclose(other[..., -1, -1], contrast[..., -1, -1])
    torch.testing.assert_close(read(features[:1], colours[:1], state[:1])[1], contrast[:1])
    # under bf16 autocast the distances are summed in float32: no cancellation below zero
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, low = read(features, colours, state)
    assert (low >= 0).all()
    torch.testing.assert_close(low.float(), contrast, rtol=0.05, atol=0.05 * contrast.mean().item())


def test_the_colour_read_is_no_write_level() -> None:
    with pytest.raises(ValueError, match="'rgb' is a read level"):
        RegisterUNet3D(WIDTH, registers=2, write_levels=["dec0", "rgb"])


def test_checkpoints_from_before_the_film_write_back_build_the_token_design() -> None:
    from dagr.checkpoints import saliency_arguments

    old = {"channels": WIDTH, "registers": 2, "register_mode": "attention"}
    model = build_saliency_model(**saliency_arguments(old))
    assert all(hasattr(block, "write") for block in model.register_blocks.values())
    assert list(model.register_blocks) == ["bottleneck"]  # where the first design read
    named = saliency_arguments({**old, "register_levels": ["bottleneck", "dec1"]})
    assert named["read_levels"] == ["bottleneck", "dec1"] and "register_levels" not in named
    assert saliency_arguments({**old, "register_write": "film"})["register_write"] == "film"
    # the mix design before the colour read names its read levels, and builds as it was
    before = build_saliency_model(**saliency_arguments(
        {**old, "register_write": "mix", "read_levels": ["enc1", "bottleneck"]}))
    assert list(before.register_blocks) == ["enc1", "bottleneck"]
    assert not hasattr(before, "colour_read")


def test_read_attention_weights_sum_to_one_over_the_level() -> None:
    torch.manual_seed(0)
    model = RegisterUNet3D(WIDTH, registers=3, read_levels=["bottleneck", "enc2", "rgb"]).eval()
    with torch.no_grad():
        weights = model.read_attention(clip())
    assert list(weights) == ["rgb", "enc2", "bottleneck"]  # in the order the registers read
    assert weights["rgb"].shape[2:] == (4, HEIGHT // 2 + 1, WIDTH_PX // 2 + 1)  # enc1's grid
    for level in weights.values():
        assert level.shape[:2] == (2, 3) and (level >= 0).all()
        torch.testing.assert_close(level.sum(dim=(-3, -2, -1)), torch.ones(2, 3))
    with pytest.raises(ValueError, match="attention-mode"):
        RegisterUNet3D(WIDTH, registers=3, register_mode="input").read_attention(clip())
