"""DyTBlock: the gathered eval path equals the masked training path."""
import pytest
import torch
from timm.models.vision_transformer import Block

from mmdyt.models import DISPATCH_MODES, DyTBlock

C, HEADS, N = 32, 4, 17  # 1 cls + 16 patch tokens


def make_block(dispatch, adapter='Adapter'):
    block = DyTBlock(
        embed_dims=C,
        num_heads=HEADS,
        dispatch=dispatch,
        adapter_cfg=dict(type=adapter, dropout=0.))
    with torch.no_grad():  # non-zero adapters, so that they are tested too
        for name, param in block.named_parameters():
            if '_adapter.' in name:
                param.normal_(0, 0.1)
    return block


def fix_masks(block, kind, batch):
    """Replace the dispatchers' decisions by fixed masks of ``kind``."""
    generator = torch.Generator().manual_seed(0)
    for site in ('attn', 'mlp', 'layer'):
        dispatcher = getattr(block, f'{site}_dispatcher')
        if dispatcher is None:
            continue
        shape = (batch, 1) if site == 'layer' else (batch, N - 1)
        if kind == 'ones':
            mask = torch.ones(shape)
        elif kind == 'zeros':
            mask = torch.zeros(shape)
        else:
            mask = (torch.rand(shape, generator=generator) > 0.5).float()
            if site == 'layer':
                mask[0] = 1 - mask[-1]  # a mix of computed and skipped
        dispatcher.forward = lambda tokens, mask=mask: mask


@pytest.mark.parametrize('adapter', ['Adapter', 'MoEAdapter'])
@pytest.mark.parametrize('kind', ['ones', 'zeros', 'random'])
@pytest.mark.parametrize('batch', [1, 4])
@pytest.mark.parametrize('dispatch', DISPATCH_MODES)
def test_gathered_equals_masked(dispatch, batch, kind, adapter):
    block = make_block(dispatch, adapter)
    fix_masks(block, kind, batch)
    x = torch.randn(batch, N, C)
    masked, masks_train = block.train()(x)
    with torch.no_grad():
        gathered, masks_eval = block.eval()(x)
    torch.testing.assert_close(gathered, masked, atol=1e-5, rtol=0)
    assert len(masks_train) == len(masks_eval) == {
        'mlp': 1, 'attn': 1, 'attn_mlp': 2, 'layer': 1, None: 0
    }[dispatch]


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


def test_unknown_dispatch():
    with pytest.raises(ValueError, match=r"dispatch must be one of .*'mlp'"):
        DyTBlock(embed_dims=C, num_heads=HEADS, dispatch='token')
