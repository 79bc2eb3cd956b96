"""Low-precision inference of the frozen network: weights cast (and on the
CPU packed) once, refreshed when they change, row-aware matmuls, the same
results as autocast within bfloat16's rounding, training untouched."""
import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from mmdyt.models import DyTSwinTransformer, DyTViT
from mmdyt.models.layers.prepacked_linear import (PrepackedLinear,
                                                  mlp_forward)
from mmdyt.models.layers.row_planner import (ROW_PLANNER, RowPlanner,
                                             split_rows)
from helpers import TINY_12

BF16 = torch.bfloat16


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float(), want.float()
    return float((got - want).norm() / want.norm())


def make_layer(in_features=48, out_features=96, bias=True):
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=bias).eval()
    linear.requires_grad_(False)
    return linear, PrepackedLinear.from_linear(linear, float32=False)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('shape', [(7, 48), (2, 5, 48), (300, 48)])
def test_autocast_output_equals_autocast_linear(bias, shape):
    """Under autocast the layer computes what autocast's F.linear does, in
    bfloat16, from a copy of the weight made once."""
    linear, layer = make_layer(bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        want, got = linear(x), layer(x)
        copy_made = layer._low
        layer(x)
    assert got.dtype == want.dtype == BF16 and got.shape == want.shape
    assert rel_error(got, want) < 1e-2
    assert copy_made is not None and layer._low is copy_made  # kept
    assert copy_made.dtype == BF16
    # packed for oneDNN where this CPU has bfloat16 kernels
    assert copy_made.packed == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_low_precision_inputs_and_weights_use_the_copy():
    """A model converted to bfloat16 (no autocast) runs the packed path on
    the CPU; float32 never does unless float32 packing is on."""
    linear, layer = make_layer()
    x = torch.randn(9, 48)
    with torch.inference_mode():
        layer(x)
        assert layer._low is None and layer._packed is None
        linear.to(BF16)
        got = layer(x.to(BF16))
        want = F.linear(x.to(BF16), linear.weight, linear.bias)
    assert layer._low is not None and got.dtype == BF16
    assert rel_error(got, want) < 1e-2


def test_copy_refreshes_after_an_optimizer_step_and_load_state_dict():
    linear, layer = make_layer()
    linear.requires_grad_(True)
    x = torch.randn(5, 48)

    def run():
        with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
            return layer(x)

    first = run()
    optimizer = torch.optim.SGD(linear.parameters(), lr=1.0)
    linear(x).sum().backward()
    optimizer.step()
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        want = linear(x)
    after_step = run()
    assert rel_error(after_step, want) < 1e-2
    assert rel_error(after_step, first) > 0.1
    state = {k: torch.randn_like(v) for k, v in linear.state_dict().items()}
    layer.load_state_dict(state)
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        want = linear(x)
    assert rel_error(run(), want) < 1e-2


def test_training_and_autograd_keep_autocast():
    """With autograd (or in training mode) the copy is not used: gradients
    flow to the weights as with nn.Linear."""
    linear, layer = make_layer()
    linear.requires_grad_(True)
    x = torch.randn(4, 48)
    with torch.autocast('cpu', dtype=BF16):
        out = layer(x)
    out.float().sum().backward()
    assert layer._low is None and linear.weight.grad is not None
    layer.train()
    with torch.no_grad(), torch.autocast('cpu', dtype=BF16):
        layer(x)
    assert layer._low is None


def test_deepcopy_and_pickle_drop_the_copies():
    _, layer = make_layer()
    x = torch.randn(3, 48)
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        want = layer(x)
    assert layer._low is not None
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(layer),
                  torch.load(buffer, weights_only=False)):
        assert other._low is None
        with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
            torch.testing.assert_close(other(x), want)


def test_fused_gelu_equals_gelu_of_the_output():
    torch.manual_seed(0)
    mlp = Mlp(48, 192).eval()
    mlp.fc1 = PrepackedLinear.from_linear(mlp.fc1, float32=False)
    mlp.fc2 = PrepackedLinear.from_linear(mlp.fc2, float32=False)
    x = torch.randn(70, 48)
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        want = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)),
                        mlp.fc2.weight, mlp.fc2.bias)
        got = mlp_forward(mlp, x)
    assert got.dtype == BF16 and rel_error(got, want) < 2e-2


class FakeTimes:
    """Stands in for the planner's clock: ``ms[pieces]`` per call."""

    def __init__(self, ms):
        self.ms, self.calls = ms, []

    def __call__(self, run, rows, pieces):
        self.calls.append((rows, pieces))
        return self.ms[pieces]


def test_planner_picks_the_fastest_measured_split(monkeypatch):
    planner = RowPlanner(granularity=32, max_pieces=4, min_gain=0.1)
    fake = FakeTimes({1: 4.0, 2: 2.2, 3: 2.6, 4: 3.0})
    monkeypatch.setattr(planner, '_time', fake)
    assert planner.pieces('fc2', 788, None) == 2
    # rounded to the bucket of 800 rows: one timing per candidate
    assert fake.calls == [(800, 1), (800, 2), (800, 3), (800, 4)]
    assert planner.pieces('fc2', 790, None) == 2  # cached
    assert len(fake.calls) == 4
    assert planner.plans() == {('fc2', torch.get_num_threads()): {800: 2}}
    # a gain under min_gain keeps one call
    fake.ms = {1: 4.0, 2: 3.8, 3: 3.9, 4: 5.0}
    assert planner.pieces('fc1', 788, None) == 1
    # few rows, or planning off: one call, nothing timed
    assert planner.pieces('qkv', 63, None) == 1
    planner.enabled = False
    assert planner.pieces('proj', 1000, None) == 1
    assert len(fake.calls) == 8
    planner.clear()
    assert planner.plans() == {}


def test_planner_times_real_calls():
    planner = RowPlanner(granularity=16, max_pieces=3, repeats=2)
    calls = []
    assert planner.pieces('mm', 100, lambda r, n: calls.append((r, n))) in (
        1, 2, 3)
    assert {n for _, n in calls} == {1, 2, 3}
    assert all(r == 112 for r, _ in calls)
    (times, ), = [planner.timings().values()]
    assert set(times) == {1, 2, 3} and min(times.values()) >= 0


@pytest.mark.parametrize('rows,pieces', [(10, 3), (9, 3), (5, 1), (7, 4)])
def test_split_rows(rows, pieces):
    sizes = split_rows(rows, pieces)
    assert sum(sizes) == rows and len(sizes) == pieces
    assert max(sizes) - min(sizes) <= 1


def test_split_matmuls_equal_one_call(monkeypatch):
    """However the planner splits the rows, the output is the same."""
    _, layer = make_layer(96, 64)
    x = torch.randn(333, 96)
    outputs = []
    for pieces in (1, 2, 3, 4):
        monkeypatch.setattr(ROW_PLANNER, 'pieces',
                            lambda *args, n=pieces: n)
        with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
            outputs.append(layer(x).float())
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=2e-2, rtol=1e-2)


def forward(model: DyTViT, x: torch.Tensor):
    """The last block's tokens and the dispatch masks of one forward."""
    outs, masks = model.forward_with_masks(x)
    return outs[-1], masks


def tiny_vit(low_precision_weights: bool) -> DyTViT:
    torch.manual_seed(0)
    return DyTViT(arch=TINY_12, img_size=64, patch_size=16, out_type='raw',
                  low_precision_weights=low_precision_weights).eval()


def test_dyt_vit_low_precision_equals_autocast_alone():
    """DyT under autocast with its weight copies: the decisions and outputs
    of autocast alone (within bfloat16's rounding) and float32's."""
    model, plain = tiny_vit(True), tiny_vit(False)
    assert model.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        want, want_masks = forward(model, x)
        with torch.autocast('cpu', dtype=BF16):
            got, masks = forward(model, x)
            alone, alone_masks = forward(plain, x)
    used = [m for m in model.modules() if isinstance(m, PrepackedLinear)]
    assert len(used) == 4 * 12 and all(m._low is not None for m in used)
    assert all(m._low is None for m in plain.modules()
               if isinstance(m, PrepackedLinear))
    assert rel_error(got, alone) < 2e-2 and rel_error(got, want) < 5e-2
    for masks_other in (alone_masks, want_masks):
        agree = torch.cat([(a == b).flatten() for a, b in zip(
            masks, masks_other)]).float().mean()
        assert agree > 0.97


def test_dyt_vit_training_is_unchanged():
    """Training (with and without AMP) runs the plain layers: the same
    loss and gradients bit for bit as without the weight copies."""
    grads = []
    for low in (True, False):
        model = tiny_vit(low).train()
        torch.manual_seed(1)
        x = torch.randn(2, 3, 64, 64)
        with torch.autocast('cpu', dtype=BF16):
            out, _ = forward(model, x)
        out.float().square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()
                      if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_dyt_swin_low_precision_equals_autocast_alone():
    torch.manual_seed(0)
    kwargs = dict(embed_dims=32, depths=(2, 2), num_heads=(1, 2),
                  out_indices=(0, 1), window_size=4)
    model = DyTSwinTransformer(**kwargs).eval()
    plain = DyTSwinTransformer(low_precision_weights=False, **kwargs).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), torch.autocast('cpu', dtype=BF16):
        got, alone = model(x), plain(x)
    packed = [m for m in model.modules() if isinstance(m, PrepackedLinear)]
    # per block qkv, proj, fc1, fc2; the patch merging's reduction
    assert len(packed) == 4 * 4 + 1
    assert all(m._low is not None for m in packed)
    for a, b in zip(got, alone):
        assert rel_error(a, b) < 3e-2
