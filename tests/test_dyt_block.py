"""DyTBlock: the gathered eval path equals the masked training path."""
import pytest
import torch
from timm.models.vision_transformer import Block

from helpers import fixed_decisions
from mmdyt.models import DISPATCH_MODES, DyTBlock

C, HEADS, N = 32, 4, 17  # 1 cls + 16 patch tokens


#: Block variants the gathered path must handle: a plain pre-trained block,
#: one with layer scale (``ls1``/``ls2`` on the gathered updates) and one of
#: a ViT without cls token (no prefix: every token is dispatched).
VARIANTS = {
    'plain': dict(),
    'layer_scale': dict(layer_scale_init_value=0.3),
    'no_cls_token': dict(num_prefix_tokens=0),
    'rel_pos_bias': dict(rel_pos_bias_grid=(4, 4)),
    # no cls token: the N tokens are a 1 x N grid of patches
    'rel_pos_bias_no_cls': dict(rel_pos_bias_grid=(1, N),
                                num_prefix_tokens=0),
}


def make_block(dispatch, adapter='Adapter', **kwargs):
    block = DyTBlock(
        embed_dims=C,
        num_heads=HEADS,
        dispatch=dispatch,
        adapter_cfg=dict(type=adapter, dropout=0.),
        **kwargs)
    with torch.no_grad():  # non-zero adapters (and biases): tested too
        for name, param in block.named_parameters():
            if '_adapter.' in name or 'rel_pos_bias.' in name:
                param.normal_(0, 0.1)
    return block


def fix_masks(block, kind, batch):
    """Replace the dispatchers' decisions by fixed masks of ``kind``."""
    generator = torch.Generator().manual_seed(0)
    for site in ('attn', 'mlp', 'layer'):
        dispatcher = getattr(block, f'{site}_dispatcher')
        if dispatcher is None:
            continue
        patches = N - block.num_prefix_tokens
        shape = (batch, 1) if site == 'layer' else (batch, patches)
        if kind == 'ones':
            mask = torch.ones(shape)
        elif kind == 'zeros':
            mask = torch.zeros(shape)
        else:
            mask = (torch.rand(shape, generator=generator) > 0.5).float()
            if site == 'layer':
                mask[0] = 1 - mask[-1]  # a mix of computed and skipped
        dispatcher.forward = lambda tokens, mask=mask: fixed_decisions(
            tokens, mask)


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('adapter', ['Adapter', 'MoEAdapter'])
@pytest.mark.parametrize('kind', ['ones', 'zeros', 'random'])
@pytest.mark.parametrize('batch', [1, 4])
@pytest.mark.parametrize('dispatch', DISPATCH_MODES)
def test_gathered_equals_masked(dispatch, batch, kind, adapter, variant):
    block = make_block(dispatch, adapter, **VARIANTS[variant])
    fix_masks(block, kind, batch)
    x = torch.randn(batch, N, C)
    masked, masks_train = block.train()(x)
    with torch.no_grad():
        gathered, masks_eval = block.eval()(x)
    torch.testing.assert_close(gathered, masked, atol=1e-5, rtol=0)
    assert len(masks_train) == len(masks_eval) == {
        'mlp': 1, 'attn': 1, 'attn_mlp': 2, 'layer': 1, None: 0
    }[dispatch]


@pytest.mark.parametrize('dispatch', DISPATCH_MODES)
def test_complete_evaluation_equals_complete_training(dispatch):
    """The complete model in evaluation (every token through every
    sub-layer, ``fc2`` added into the stream in place) equals the plain
    sums of training."""
    block = make_block(dispatch)
    x = torch.randn(2, N, C)
    trained, _ = block.train()(x, complete=True)
    with torch.no_grad():
        evaluated, _ = block.eval()(x, complete=True)
    torch.testing.assert_close(evaluated, trained, atol=1e-5, rtol=0)


@pytest.mark.parametrize('dispatch', ['mlp', 'attn', 'attn_mlp'])
def test_skipped_tokens_keep_value_plus_adapter(dispatch):
    block = make_block(dispatch).eval()
    fix_masks(block, 'zeros', 2)
    x = torch.randn(2, N, C)
    with torch.no_grad():
        out, _ = block(x)
        update = block.ls1(block.attn(block.norm1(x)))
        if dispatch == 'mlp':
            x1 = x + update
            expected = x1 + block.mlp_adapter(x1)
        else:
            x1 = x + block.attn_adapter(x)
            x1[:, 0] += update[:, 0]  # the cls token is always active
            if dispatch == 'attn':
                expected = x1 + block.mlp(block.norm2(x1))
            else:
                expected = x1 + block.mlp_adapter(x1)
    patch = slice(1, None)
    torch.testing.assert_close(out[:, patch], expected[:, patch])


def test_layer_dispatch_skips_whole_samples():
    block = make_block('layer').eval()
    mask = torch.tensor([[1.], [0.]])
    block.layer_dispatcher.forward = lambda tokens: mask
    x = torch.randn(2, N, C)
    with torch.no_grad():
        out, masks = block(x)
        dense, _ = block(x, complete=True)
    assert masks[0].shape == (2, 1)
    torch.testing.assert_close(out[0], dense[0])
    torch.testing.assert_close(out[1], x[1] + block.layer_adapter(x[1:])[0])


def test_complete_block_at_init_equals_timm_block():
    block = DyTBlock(embed_dims=C, num_heads=HEADS, dispatch='attn_mlp')
    reference = Block(C, HEADS, qkv_bias=True)
    missing, unexpected = block.load_state_dict(reference.state_dict(),
                                                strict=False)
    assert not unexpected
    assert all('_adapter.' in k or '_dispatcher.' in k for k in missing)
    x = torch.randn(2, N, C)
    out, masks = block.eval()(x, complete=True)
    torch.testing.assert_close(out, reference.eval()(x))
    assert all(m.eq(1).all() for m in masks)


class FixedDropPath(torch.nn.Module):
    """Stochastic depth with given per-sample keep factors (0 or 1/p)."""

    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def forward(self, x):
        return x * self.keep.view(-1, *[1] * (x.dim() - 1))


@pytest.mark.parametrize('dispatch', ['mlp', 'layer'])
def test_drop_path_in_masked_training(dispatch):
    """Stochastic depth scales each sample's (masked) residual updates in
    training, and does nothing in evaluation."""
    block = make_block(dispatch, drop_path_rate=0.5)
    assert block.drop_path1.drop_prob == block.drop_path2.drop_prob == 0.5
    fix_masks(block, 'random', 4)
    mask = block.dispatchers()[0](None)
    k1, k2 = torch.tensor([2., 0, 2, 0]), torch.tensor([2., 2, 0, 0])
    x = torch.randn(4, N, C)
    with torch.no_grad():
        eval_out, _ = block.eval()(x)
        block.drop_path1, block.drop_path2 = FixedDropPath(k1), \
            FixedDropPath(k2)
        out, _ = block.train()(x)
        if dispatch == 'mlp':
            x1 = x + k1[:, None, None] * block.attn_update(x)
            full = block._with_prefix(mask)[..., None]
            expected = x1 + k2[:, None, None] * full * block.mlp_update(
                x1) + block.mlp_adapter(x1)
        else:
            attn = k1[:, None, None] * block.attn_update(x)
            update = attn + k2[:, None, None] * block.mlp_update(x + attn)
            expected = x + mask[..., None] * update + block.layer_adapter(x)
        torch.testing.assert_close(out, expected)
        # evaluation: no stochastic depth, the plain gathered block
        plain = make_block(dispatch)
        plain.load_state_dict(block.state_dict())
        fix_masks(plain, 'random', 4)
        torch.testing.assert_close(eval_out, plain.eval()(x)[0])


def test_drop_path_keeps_the_straight_through_gradient():
    block = DyTBlock(embed_dims=C, num_heads=HEADS, drop_path_rate=0.3,
                     adapter_cfg=dict(type='Adapter', dropout=0.)).train()
    out, masks = block(torch.randn(4, N, C))
    (out.sum() + masks[0].sum()).backward()
    assert block.mlp_dispatcher.linear.weight.grad.abs().sum() > 0


def test_sites_table_is_the_one_definition():
    """The block's dispatchers, its mask order and the backbone's sites all
    come from DISPATCH_SITES."""
    from mmdyt.models.layers.dyt_block import DISPATCH_SITES
    for dispatch, sites in DISPATCH_SITES.items():
        block = make_block(dispatch)
        assert block.dispatch_sites == sites
        assert [getattr(block, f'{s}_dispatcher') for s in sites
                ] == block.dispatchers()
        fix_masks(block, 'random', 2)
        assert len(block.eval()(torch.randn(2, N, C))[1]) == len(sites)


def test_unknown_dispatch():
    with pytest.raises(ValueError, match=r"dispatch must be one of .*'mlp'"):
        DyTBlock(embed_dims=C, num_heads=HEADS, dispatch='token')


@pytest.mark.parametrize('rate', [0.5, 1.0])
def test_gathered_residual_adds_into_the_given_residual_in_place(rate):
    from mmdyt.models.layers.sparse_ops import active_index, gathered_residual
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4)
    mask = (torch.rand(2, 6) < rate).float()
    residual = torch.randn(2, 6, 4)
    expected = residual + mask[..., None] * torch.tanh(x)
    storage = residual.data_ptr()
    out = gathered_residual(x, active_index(mask), torch.tanh,
                            residual=lambda: residual)
    torch.testing.assert_close(out, expected)
    assert out.data_ptr() == storage  # no new (B, N, C) buffer
    torch.testing.assert_close(residual, expected)
    x_before = x.clone()
    torch.testing.assert_close(
        gathered_residual(x, active_index(mask), torch.tanh),
        x_before + mask[..., None] * torch.tanh(x_before))
    torch.testing.assert_close(x, x_before)  # x is left alone


@pytest.mark.parametrize('rate', [0.0, 0.5, 1.0])
def test_gathered_residual_reads_x_before_the_residual_updates_it(rate):
    from mmdyt.models.layers.sparse_ops import active_index, gathered_residual
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4)
    mask = (torch.rand(2, 6) < rate).float()
    expected = 2 * x + mask[..., None] * torch.tanh(x)
    storage = x.data_ptr()
    out = gathered_residual(x, active_index(mask), torch.tanh,
                            residual=lambda: x.mul_(2))
    torch.testing.assert_close(out, expected)
    assert out.data_ptr() == storage


@pytest.mark.parametrize('rate', [0.0, 0.5, 1.0, None])
@pytest.mark.parametrize('with_adapter', [False, True])
def test_gathered_mlp_update_is_the_masked_update(rate, with_adapter):
    """The one gathered evaluation MLP of DyTBlock and DyTSwinBlock:
    ``x + mask * mlp(x) + adapter(x)``, in place into ``x`` unless autograd
    needs ``x``."""
    from mmdyt.models.layers import Adapter
    from mmdyt.models.layers.sparse_ops import gathered_mlp_update
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4)
    mask = None if rate is None else (torch.rand(2, 6) < rate).float()
    adapter = Adapter(4, bottleneck=2).eval() if with_adapter else None
    with torch.no_grad():
        if adapter is not None:
            adapter.up.weight.normal_()
        expected = x + torch.tanh(x) * (1 if mask is None else
                                        mask[..., None])
        if adapter is not None:
            expected = adapter.add_to(expected, x)
        out = gathered_mlp_update(x.clone(), mask, torch.tanh, adapter)
    torch.testing.assert_close(out, expected)
    leaf = x.clone().requires_grad_()
    out = gathered_mlp_update(leaf, mask, torch.tanh, adapter)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(leaf.detach(), x)  # autograd: not in place


@pytest.mark.parametrize('dispatch', [None, 'mlp', 'attn_mlp', 'layer'])
def test_evaluation_with_autograd_is_not_broken_by_in_place_updates(dispatch):
    """Evaluation adds updates into the block's own stream in place; with a
    gradient asked for (attribution in eval mode) it must not."""
    torch.manual_seed(0)
    block = DyTBlock(embed_dims=C, num_heads=HEADS, dispatch=dispatch)
    block.eval()
    x = torch.randn(2, N, C, requires_grad=True)
    out, _ = block(x)
    out.sum().backward()
    with torch.no_grad():
        expected, _ = block(x)
    torch.testing.assert_close(out, expected)
    assert x.grad is not None and x.grad.abs().sum() > 0
