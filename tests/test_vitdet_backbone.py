"""ViTDet's backbone options on DyTViT: windowed attention, decomposed
relative positions, no cls token, the position embedding for 1024²."""
import pytest
import torch
from timm.models.vision_transformer_sam import VisionTransformerSAM

from helpers import save_timm_vit, tiny_dyt_vit
from mmdyt.models import DyTBlock, DyTViT
from mmdyt.models.layers.window_attention import WindowAttention

VITDET = dict(with_cls_token=False, window_size=3, global_attn_indexes=(1, ),
              use_rel_pos=True)


def randomise_rel_pos(model, seed=0):
    """Non-zero relative position tables (they are zero at init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'rel_pos_' in name:
                param.copy_(0.2 * torch.randn(param.shape,
                                              generator=generator))


def sam_reference(dyt: DyTViT, img_size) -> VisionTransformerSAM:
    """timm's SAM ViT with the same blocks and weights as ``dyt``."""
    settings = dyt.arch_settings
    global_blocks = [
        i for i, b in enumerate(dyt.blocks) if not b.attn.window_size
    ]
    sam = VisionTransformerSAM(
        img_size=img_size,
        patch_size=dyt.patch_size,
        embed_dim=settings['embed_dims'],
        depth=settings['num_layers'],
        num_heads=settings['num_heads'],
        mlp_ratio=settings['feedforward_channels'] / settings['embed_dims'],
        use_rel_pos=True,
        window_size=dyt.window_size,
        global_attn_indexes=tuple(global_blocks),
        norm_layer=torch.nn.LayerNorm,
        num_classes=0)
    state = {
        k: v
        for k, v in dyt.state_dict().items()
        if k.startswith(('blocks.', 'patch_embed.'))
        and '_adapter.' not in k and '_dispatcher.' not in k
    }
    state['pos_embed'] = dyt.pos_embed.reshape(1, *dyt.patch_grid, -1)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.startswith(('neck.', 'head.')) for k in missing), missing
    # timm's SAM LayerNorms have eps 1e-5, ViT's (and DyTViT's) 1e-6
    for module in sam.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    return sam.eval()


@pytest.mark.parametrize('size', [(48, 48), (56, 40)])
def test_complete_backbone_at_init_equals_timm_sam_blocks(size):
    # a 6x6 / 7x5 grid with windows of 3: padding in the 7x5 case
    model = tiny_dyt_vit(img_size=size, **VITDET).eval()
    randomise_rel_pos(model)
    sam = sam_reference(model, size)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = model(x, complete=True)[0]
        tokens = sam.patch_embed(x) + sam.pos_embed
        reference = sam.blocks(tokens).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    assert [b.attn.window_size for b in model.blocks] == [3, 0, 3, 3]


def test_vit_b_vitdet_equals_timm_sam_at_1024():
    """ViT-B as ViTDet has it: windows of 14 (a 64x64 grid padded to 70x70)
    and global attention in blocks 2, 5, 8 and 11."""
    model = DyTViT(arch='base', img_size=1024, with_cls_token=False,
                   window_size=14, global_attn_indexes=(2, 5, 8, 11),
                   use_rel_pos=True, adapter_cfg=dict(type='Adapter',
                                                      bottleneck=128)).eval()
    randomise_rel_pos(model)
    sam = sam_reference(model, 1024)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        ours = model(x, complete=True)[0]
        reference = sam.blocks(sam.patch_embed(x) + sam.pos_embed)
    assert ours.shape == (1, 768, 64, 64)
    torch.testing.assert_close(ours, reference.permute(0, 3, 1, 2),
                               atol=1e-4, rtol=0)


def make_block(window_size, dispatch='mlp'):
    block = DyTBlock(embed_dims=32, num_heads=4, num_prefix_tokens=0,
                     dispatch=dispatch, window_size=window_size,
                     use_rel_pos=True, rel_pos_input_size=(5, 7),
                     adapter_cfg=dict(type='Adapter', dropout=0.))
    randomise_rel_pos(block)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if '_adapter.' in name:
                param.normal_(0, 0.1)
    return block


@pytest.mark.parametrize('dispatch', ['mlp', 'layer'])
@pytest.mark.parametrize('window_size', [3, 0])  # windowed, global
def test_gathered_equals_masked_in_windowed_and_global_blocks(
        window_size, dispatch):
    grid = (5, 7)
    block = make_block(window_size, dispatch)
    generator = torch.Generator().manual_seed(0)
    shape = (3, 1) if dispatch == 'layer' else (3, 35)
    mask = (torch.rand(shape, generator=generator) > 0.5).float()
    mask[0] = 1 - mask[-1]
    block.dispatchers()[0].forward = lambda tokens: mask
    x = torch.randn(3, 35, 32)
    masked, _ = block.train()(x, grid=grid)
    with torch.no_grad():
        gathered, _ = block.eval()(x, grid=grid)
        dense, _ = block(x, grid=grid, complete=True)
    torch.testing.assert_close(gathered, masked, atol=1e-5, rtol=0)
    assert not torch.allclose(gathered, dense)  # tokens were skipped


def test_windows_are_independent():
    """A token's attention output depends on its window only."""
    attn = WindowAttention(16, 2, window_size=2).eval()
    x = torch.randn(1, 16, 16)  # a 4x4 grid: four 2x2 windows
    changed = x.clone()
    changed[0, 15] += 1.  # the last token: bottom-right window
    with torch.no_grad():
        a, b = attn(x, (4, 4)), attn(changed, (4, 4))
    differs = (a - b).abs().sum(-1)[0].view(4, 4) > 0
    assert differs[2:, 2:].all() and differs.sum() == 4


def test_an_empty_batch_passes_through():
    """Layer dispatch may skip every sample of a block."""
    attn = WindowAttention(16, 2, window_size=2, use_rel_pos=True)
    assert attn(torch.randn(0, 16, 16), (4, 4)).shape == (0, 16, 16)


def test_rel_pos_tables_are_zero_at_init_and_sized_for_the_grid():
    attn = WindowAttention(8, 1, use_rel_pos=True, input_size=(4, 4))
    assert attn.rel_pos_h.shape == attn.rel_pos_w.shape == (7, 8)
    assert torch.equal(attn.rel_pos_h, torch.zeros(7, 8))  # zero at init
    with pytest.raises(ValueError, match='needs input_size'):
        WindowAttention(8, 1, use_rel_pos=True)


def test_rel_pos_tables_train_with_the_adapters():
    model = tiny_dyt_vit(img_size=48, **VITDET)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {'blocks.0.attn.rel_pos_h', 'blocks.1.attn.rel_pos_w'} <= trainable
    assert all('_adapter.' in n or '_dispatcher.' in n or 'attn.rel_pos_' in n
               for n in trainable)
    # windowed blocks: tables for the window; global: for the patch grid
    assert model.blocks[0].attn.rel_pos_h.shape[0] == 2 * 3 - 1
    assert model.blocks[1].attn.rel_pos_h.shape[0] == 2 * 6 - 1


def test_other_input_sizes_interpolate_the_global_tables():
    model = tiny_dyt_vit(img_size=48, **VITDET).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 40))[0]
    assert out.shape == (1, 32, 8, 5)


@pytest.mark.parametrize('options, message', [
    (dict(window_size=3), 'with_cls_token=False'),
    (dict(use_rel_pos=True), 'with_cls_token=False'),
    (dict(window_size=3, with_cls_token=False, dispatch='attn'),
     "dispatch='attn'"),
    (dict(use_rel_pos=True, use_rel_pos_bias=True, with_cls_token=False),
     'exclude each other'),
    (dict(global_attn_indexes=(1, )), 'needs window_size'),
    (dict(window_size=3, with_cls_token=False, global_attn_indexes=(9, )),
     'global_attn_indexes contains 9'),
])
def test_bad_vitdet_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_dyt_vit(img_size=48, **options)


def test_timm_checkpoint_with_cls_token_loads_without_it(tmp_path):
    """ViTDet drops the pre-trained cls token and resamples the position
    embedding to its grid (here 14x14 -> 64x64 at 1024)."""
    path = str(tmp_path / 'vit.pth')
    save_timm_vit(path, 'vit_tiny_patch16_224')
    model = DyTViT(arch='tiny', img_size=1024, init_cfg=dict(
        type='Pretrained', checkpoint=path), **dict(VITDET, window_size=14))
    model.init_weights()
    source = torch.load(path)['pos_embed'][:, 1:]
    assert model.pos_embed.shape == (1, 64 * 64, 192)
    corner = torch.nn.functional.interpolate(
        source.reshape(1, 14, 14, 192).permute(0, 3, 1, 2), size=(64, 64),
        mode='bicubic', align_corners=False).permute(0, 2, 3, 1).reshape(
            1, -1, 192)
    torch.testing.assert_close(model.pos_embed.data, corner)


def test_activation_checkpointing_gives_the_same_gradients():
    """with_cp recomputes each block in the backward pass, replaying the
    dispatchers' Gumbel noise: same outputs, masks and gradients."""
    results = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = tiny_dyt_vit(img_size=48, with_cp=with_cp, **VITDET)
        randomise_rel_pos(model)
        model.train()
        x = torch.randn(2, 3, 48, 48)
        torch.manual_seed(1)
        (out, ), masks = model.forward_with_masks(x)
        (out.square().mean() + sum(m.mean() for m in masks)).backward()
        results.append((out.detach(), [m.detach() for m in masks], {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.requires_grad
        }))
    (out, masks, grads), (out_cp, masks_cp, grads_cp) = results
    torch.testing.assert_close(out_cp, out)
    assert all(torch.equal(a, b) for a, b in zip(masks, masks_cp))
    assert grads.keys() == grads_cp.keys()
    for name in grads:
        torch.testing.assert_close(grads_cp[name], grads[name])
    assert any(g.abs().sum() > 0 for n, g in grads.items() if 'rel_pos' in n)
