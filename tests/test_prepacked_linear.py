"""Pre-packed linear layers: same results as nn.Linear, packed only where
the oneDNN kernel applies, and invisible to state dicts and training."""
import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyt.models import DyTViT
from mmdyt.models.layers.prepacked_linear import (PrepackedLinear,
                                                  add_linear_, prepack_block)


def make_layer(bias=True, max_rows=None):
    torch.manual_seed(0)
    linear = nn.Linear(48, 96, bias=bias).eval()
    return linear, PrepackedLinear.from_linear(linear, max_rows)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('shape', [(7, 48), (2, 5, 48), (0, 48)])
def test_prepacked_equals_linear_in_inference(bias, shape):
    linear, packed = make_layer(bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want, got = linear(x), packed(x)
    assert packed._packed is not None  # the oneDNN kernel ran
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_prepacked_shares_the_parameters_and_the_state_dict():
    linear, packed = make_layer()
    assert packed.weight is linear.weight and packed.bias is linear.bias
    assert packed.state_dict().keys() == linear.state_dict().keys()
    with torch.no_grad():
        packed(torch.randn(3, 48))
    assert packed.state_dict().keys() == linear.state_dict().keys()


def test_training_and_autograd_use_the_plain_kernel():
    """oneDNN's kernel has no backward: with autograd the layer is
    nn.Linear, gradients included."""
    linear, packed = make_layer()
    x = torch.randn(4, 48, requires_grad=True)
    packed(x).square().sum().backward()
    assert packed._packed is None
    grads = [p.grad.clone() for p in (x, linear.weight, linear.bias)]
    for p in (x, linear.weight, linear.bias):
        p.grad = None
    linear(x).square().sum().backward()
    for got, p in zip(grads, (x, linear.weight, linear.bias)):
        torch.testing.assert_close(got, p.grad)
    # frozen weights, but an input that needs a gradient: still plain
    linear.requires_grad_(False)
    assert packed(x).requires_grad and packed._packed is None
    # training mode, nothing needs a gradient: plain, bit for bit
    with torch.no_grad():
        assert torch.equal(packed.train()(x), linear(x))
    assert packed._packed is None


def test_packs_at_any_number_of_rows_unless_limited():
    linear, packed = make_layer()
    x = torch.randn(3000, 48)  # more rows than any ViT-B batch of 8
    with torch.no_grad():
        got = packed(x)
    assert packed._packed is not None
    torch.testing.assert_close(got, linear(x), atol=1e-5, rtol=1e-5)
    assert 'max_rows=None' in repr(packed)
    for bad in (-1, 2.5, '512'):
        with pytest.raises(ValueError, match='max_rows must be None or a'):
            PrepackedLinear(48, 96, max_rows=bad)


@pytest.mark.parametrize('case', ['rows', 'dtype', 'autocast'])
def test_falls_back_where_packing_does_not_apply(case):
    linear, packed = make_layer(max_rows=8)
    x = torch.randn(9 if case == 'rows' else 8, 48)
    with torch.no_grad():
        if case == 'dtype':
            linear.double()
            got, want = packed(x.double()), linear(x.double())
        elif case == 'autocast':
            with torch.autocast('cpu', dtype=torch.bfloat16):
                got, want = packed(x), linear(x)
        else:
            got, want = packed(x), linear(x)
    assert packed._packed is None
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_changed_weight_is_packed_again():
    linear, packed = make_layer()
    x = torch.randn(3, 48)
    with torch.no_grad():
        packed(x)
        linear.weight.mul_(2)  # an optimizer step, in place
        torch.testing.assert_close(packed(x), linear(x), atol=1e-5,
                                   rtol=1e-5)
        state = {
            k: torch.randn_like(v)
            for k, v in linear.state_dict().items()
        }
        packed.load_state_dict(state)
        torch.testing.assert_close(packed(x), F.linear(x, state['weight'],
                                                       state['bias']),
                                   atol=1e-5, rtol=1e-5)
        linear.weight.data.mul_(2)  # bypasses the version counter
        packed.forget_packed()
        torch.testing.assert_close(packed(x), linear(x), atol=1e-5,
                                   rtol=1e-5)


def test_copies_and_pickles_without_the_packed_weight():
    linear, packed = make_layer()
    x = torch.randn(3, 48)
    with torch.no_grad():
        packed(x)  # an opaque oneDNN tensor that cannot be copied
        twin = copy.deepcopy(packed)
        buffer = io.BytesIO()
        torch.save(packed, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        for model in (twin, loaded):
            torch.testing.assert_close(model(x), linear(x), atol=1e-5,
                                       rtol=1e-5)
    assert packed._packed is not None  # the original keeps its copy


def test_add_linear_adds_in_place_or_in_one_packed_call():
    linear, packed = make_layer()
    x, out = torch.randn(5, 48), torch.randn(5, 96)
    want = out + linear(x)
    with torch.no_grad():
        plain = out.clone()
        assert add_linear_(plain, x, linear) is plain  # addmm_ into it
        fused = add_linear_(out.clone(), x, packed)
    torch.testing.assert_close(plain, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused, want, atol=1e-5, rtol=1e-5)


def test_prepack_block_names_what_it_cannot_pack():
    block = nn.Module()
    block.attn = nn.Module()
    block.attn.qkv = nn.Conv1d(4, 12, 1)
    with pytest.raises(TypeError, match=r'attn\.qkv must be an nn\.Linear'):
        prepack_block(block, names=('attn.qkv', ))


@pytest.mark.parametrize('dispatch', ['mlp', None, 'attn_mlp'])
def test_dyt_vit_prepack_weights(dispatch):
    """The option changes neither the state dict nor what evaluation and
    training compute (to float32 rounding), with non-zero adapters and
    both the gathered and the every-token MLP path."""
    torch.manual_seed(0)
    kwargs = dict(arch='tiny', img_size=32, out_type='raw',
                  dispatch=dispatch)
    plain = DyTViT(**kwargs)
    packed = DyTViT(prepack_weights=True, **kwargs)
    with torch.no_grad():
        for name, param in plain.named_parameters():
            if '_adapter.' in name:
                param.normal_(0, 0.1)
    packed.load_state_dict(plain.state_dict())
    assert packed.state_dict().keys() == plain.state_dict().keys()
    assert isinstance(packed.blocks[0].mlp.fc2, PrepackedLinear)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (want, ), masks = plain.eval().forward_with_masks(x)
        (got, ), packed_masks = packed.eval().forward_with_masks(x)
    assert packed.blocks[0].mlp.fc1._packed is not None
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for a, b in zip(packed_masks, masks):
        assert torch.equal(a, b)
    torch.manual_seed(1)
    (trained, ) = plain.train()(x)
    torch.manual_seed(1)
    (trained_packed, ) = packed.train()(x)
    torch.testing.assert_close(trained_packed, trained, atol=0, rtol=0)
