"""Adapter and MoEAdapter."""
import pytest
import torch
import torch.nn.functional as F

from mmdyt.models import Adapter, MoEAdapter
from mmdyt.registry import build_model


def test_fresh_adapter_is_zero_and_has_the_paper_size():
    adapter = Adapter(embed_dims=768, bottleneck=64)
    assert adapter(torch.randn(2, 5, 768)).abs().max() == 0
    # the paper (Sec. 3.3): 768*64*2 + 64 + 768 per block
    assert sum(p.numel() for p in adapter.parameters()) == 99136


def test_adapter_formula():
    adapter = Adapter(embed_dims=8, bottleneck=4, scale=0.1, dropout=0.).eval()
    torch.nn.init.normal_(adapter.up.weight)
    torch.nn.init.normal_(adapter.up.bias)
    x = torch.randn(3, 8)
    hidden = F.relu(x @ adapter.down.weight.T + adapter.down.bias)
    expected = 0.1 * (hidden @ adapter.up.weight.T) + 0.1 * adapter.up.bias
    torch.testing.assert_close(adapter(x), expected)


def _randomise(module):
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.2)


def test_moe_adapter_runs_one_adapter_with_per_sample_merged_weights():
    moe = MoEAdapter(embed_dims=8, num_experts=3, bottleneck=4,
                     dropout=0.).eval()
    _randomise(moe)
    x = torch.randn(2, 6, 8)
    alpha = moe.routing_weights(x)
    assert alpha.shape == (2, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2))
    out = moe(x)
    for b in range(2):  # reference: a plain Adapter with the merged weights
        ref = Adapter(embed_dims=8, bottleneck=4, dropout=0.).eval()
        with torch.no_grad():
            mix = lambda p: torch.einsum('e,e...->...', alpha[b], p)  # noqa
            ref.down.weight.copy_(mix(moe.down_weight))
            ref.down.bias.copy_(mix(moe.down_bias))
            ref.up.weight.copy_(mix(moe.up_weight))
            ref.up.bias.copy_(mix(moe.up_bias))
        torch.testing.assert_close(out[b], ref(x[b]))


def test_moe_adapter_routes_per_image_not_per_token():
    moe = MoEAdapter(embed_dims=8, num_experts=4, dropout=0.)
    _randomise(moe)
    x = torch.randn(1, 6, 8)
    # permuting the tokens permutes the output: one routing per image
    perm = torch.randperm(6)
    torch.testing.assert_close(moe(x)[:, perm], moe(x[:, perm]))


def test_moe_adapter_size_and_zero_init():
    moe = MoEAdapter(embed_dims=768, num_experts=4, bottleneck=64)
    assert moe(torch.randn(2, 5, 768)).abs().max() == 0
    # the paper (Table 2): 4 experts + a Linear(768, 4) router per block
    assert sum(p.numel() for p in moe.parameters()) == 4 * 99136 + 769 * 4


def test_adapters_build_from_config():
    adapter = build_model(dict(type='MoEAdapter', embed_dims=8,
                               num_experts=2))
    assert isinstance(adapter, MoEAdapter)


@pytest.mark.parametrize('kwargs, match', [
    (dict(bottleneck=0), 'bottleneck'),
    (dict(dropout=1.0), 'dropout'),
    (dict(num_experts=0), 'num_experts'),
])
def test_adapter_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoEAdapter(embed_dims=8, **kwargs)


def test_fused_add_in_evaluation_equals_the_plain_sum():
    adapter = Adapter(embed_dims=16, bottleneck=4).eval()
    with torch.no_grad():
        for param in adapter.parameters():
            param.normal_()
        x, residual = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        fused = adapter.add_to(residual, x)
        torch.testing.assert_close(fused, residual + adapter(x),
                                   rtol=0, atol=1e-5)
    assert fused.shape == residual.shape
    adapter.train()  # training: dropout, the plain sum (same autograd)
    x.requires_grad_(True)
    adapter.add_to(residual, x).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize('cls', [Adapter, MoEAdapter])
@pytest.mark.parametrize('training', [False, True])
def test_add_to_in_place_reuses_the_residual(cls, training):
    torch.manual_seed(0)
    adapter = cls(embed_dims=16, bottleneck=4, dropout=0.).train(training)
    with torch.no_grad():
        for param in adapter.parameters():
            param.normal_()
        x, residual = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        expected = residual + adapter(x)
        storage = residual.data_ptr()
        out = adapter.add_to(residual, x, inplace=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert out.data_ptr() == storage
    torch.testing.assert_close(residual, expected, rtol=0, atol=1e-5)
    with torch.no_grad():  # the stream as its own input: read, then updated
        expected = x + adapter(x)
        out = adapter.add_to(x, x, inplace=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert out.data_ptr() == x.data_ptr()
