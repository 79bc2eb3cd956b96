"""The BEiT-style relative position bias of DyTViT(use_rel_pos_bias=True)."""
import pytest
import torch

from helpers import fixed_decisions, tiny_dyt_vit
from mmdyt.models.backbones.frozen_backbone import adapter_only_entries
from mmdyt.models.layers.rel_pos_bias import RelativePositionBias


def beit_index(height, width):
    """BEiT's relative position index, written out pair by pair."""
    patches = [(r, c) for r in range(height) for c in range(width)]
    distances = (2 * height - 1) * (2 * width - 1)
    size = len(patches) + 1
    index = torch.zeros(size, size, dtype=torch.long)
    for i, (ri, ci) in enumerate(patches, 1):
        for j, (rj, cj) in enumerate(patches, 1):
            index[i, j] = (ri - rj + height - 1) * (2 * width - 1) + (
                ci - cj + width - 1)
    index[0, 1:] = distances
    index[1:, 0] = distances + 1
    index[0, 0] = distances + 2
    return index


def reference_attention(attn, table, index, x):
    """Softmax attention with ``table[index]`` added to the logits."""
    batch, tokens, channels = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(batch, tokens, 3, heads, -1).permute(
        2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    bias = table[index.flatten()].view(tokens, tokens, heads).permute(2, 0, 1)
    logits = q @ k.transpose(-2, -1) * q.shape[-1]**-0.5 + bias
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, -1)
    return attn.proj(out)


def test_index_is_beits():
    bias = RelativePositionBias((3, 5), num_heads=2)
    assert torch.equal(bias.relative_position_index, beit_index(3, 5))
    assert bias.relative_position_bias_table.shape == (5 * 9 + 3, 2)


def test_attention_equals_an_independent_beit_attention():
    model = tiny_dyt_vit(use_rel_pos_bias=True, out_type='raw').eval()
    block = model.blocks[0]
    with torch.no_grad():
        block.rel_pos_bias.relative_position_bias_table.normal_(0, 1)
        x = torch.randn(2, 17, 32)
        got = block.attn_update(x)
        want = reference_attention(
            block.attn, block.rel_pos_bias.relative_position_bias_table,
            beit_index(4, 4), block.norm1(x))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_fresh_bias_is_zero_so_the_model_is_the_pretrained_vit():
    with_bias = tiny_dyt_vit(use_rel_pos_bias=True, out_type='raw').eval()
    plain = tiny_dyt_vit(out_type='raw').eval()
    plain.load_state_dict(with_bias.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            with_bias(x, complete=True)[0], plain(x, complete=True)[0],
            rtol=0, atol=1e-6)


def test_bias_trains_and_the_vit_stays_frozen():
    model = tiny_dyt_vit(use_rel_pos_bias=True, out_type='raw').train()
    tables = [n for n, p in model.named_parameters()
              if 'relative_position_bias_table' in n]
    assert len(tables) == 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(tables) <= trainable
    assert all('_adapter.' in n or '_dispatcher.' in n or n in tables
               for n in trainable)
    out, masks = model.forward_with_masks(torch.randn(2, 3, 32, 32))
    (out[0].square().mean() + sum(m.sum() for m in masks)).backward()
    for name, param in model.named_parameters():
        if name in tables:
            assert param.grad.abs().sum() > 0, name
        elif not param.requires_grad:
            assert param.grad is None, name


def test_bias_needs_its_grid():
    model = tiny_dyt_vit(use_rel_pos_bias=True)
    with pytest.raises(ValueError, match='made for a 4x4 patch grid'):
        model(torch.randn(1, 3, 48, 48))


def test_bias_survives_adapter_only_checkpoints_and_resume(tmp_path):
    base = tiny_dyt_vit()
    base_path = str(tmp_path / 'base.pth')
    torch.save({k: v for k, v in base.state_dict().items()
                if '_adapter.' not in k and '_dispatcher.' not in k},
               base_path)
    init_cfg = dict(type='Pretrained', checkpoint=base_path)
    model = tiny_dyt_vit(use_rel_pos_bias=True, save_trainable_only=True,
                         init_cfg=init_cfg, out_type='raw')
    model.init_weights()
    with torch.no_grad():
        for block in model.blocks:
            block.rel_pos_bias.relative_position_bias_table.normal_()
    state = model.state_dict()
    assert sum('relative_position_bias_table' in k for k in state) == 4
    assert 'relative_position_index' not in ' '.join(state)  # a buffer
    assert not any('attn.qkv' in k for k in state)  # frozen: left out
    assert adapter_only_entries(state)['']['trainable_only']
    fresh = tiny_dyt_vit(use_rel_pos_bias=True, init_cfg=init_cfg,
                         out_type='raw')
    fresh.init_weights()  # the base, then the adapter-only state (resume)
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x)[0], model.eval()(x)[0],
                                   rtol=0, atol=0)


def test_gathered_attention_dispatch_uses_the_active_queries_rows():
    model = tiny_dyt_vit(use_rel_pos_bias=True, dispatch='attn',
                         out_type='raw',
                         adapter_cfg=dict(type='Adapter', dropout=0.))
    with torch.no_grad():
        for block in model.blocks:
            block.rel_pos_bias.relative_position_bias_table.normal_()
            block.attn_adapter.up.weight.normal_(0, 0.1)
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(1)
    masks = [(torch.rand(3, 16) > 0.5).float() for _ in range(4)]
    for dispatcher, mask in zip(model.dispatchers(), masks):
        dispatcher.forward = lambda tokens, mask=mask: fixed_decisions(
            tokens, mask)
    masked = model.train()(x)[0]
    with torch.no_grad():
        gathered = model.eval()(x)[0]
    torch.testing.assert_close(gathered, masked, rtol=0, atol=1e-5)


@pytest.mark.parametrize('dispatch', ['mlp', 'attn'])
def test_bias_under_autocast(dispatch):
    """The bias takes the attention's dtype (bf16 under autocast)."""
    model = tiny_dyt_vit(use_rel_pos_bias=True, dispatch=dispatch,
                         out_type='raw')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model.eval()(x)[0]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)[0]
            train_out = model.train()(x)[0]
    assert out.dtype == train_out.dtype == torch.float32
    assert (out - reference).abs().max() < 0.05 * reference.abs().max()


def test_bias_is_kept_without_gradients_until_the_table_changes():
    bias = RelativePositionBias((3, 3), num_heads=2)
    with torch.no_grad():
        bias.relative_position_bias_table.normal_()
        first = bias()
        assert bias() is first and first.is_contiguous()
        bias.relative_position_bias_table.add_(1.)  # e.g. an optimiser step
        second = bias()
    assert second is not first
    torch.testing.assert_close(second, first + 1.)
    trained = bias()  # with gradients: computed, differentiable
    assert trained.requires_grad and trained is not second
    torch.testing.assert_close(trained, second)


def test_kept_bias_follows_the_dtype_asked_for():
    bias = RelativePositionBias((3, 3), num_heads=2)
    with torch.no_grad():
        bias.relative_position_bias_table.normal_()
        full = bias()
        half = bias(torch.bfloat16)
        assert half.dtype == torch.bfloat16 and bias(torch.bfloat16) is half
    torch.testing.assert_close(half.float(), full, atol=1e-2, rtol=1e-2)
