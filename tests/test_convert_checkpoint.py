"""tools/model_converters/convert_checkpoint.py: other ViT layouts ->
DyTViT, same outputs.

Each source model is built with random weights (every parameter, so that a
swapped or misplaced tensor shows), converted, loaded into DyTViT through
init_cfg and run with ``complete=True`` (every token computed): its block
outputs must equal the source's.
"""
import os.path as osp
import runpy
import sys
from unittest import mock

import pytest
import torch

from helpers import REPO_ROOT
from mmdyt.models import DyTViT
from vit_layouts import convert_vit_checkpoint, detect_layout

ARCH = dict(embed_dims=64, num_layers=3, num_heads=4, feedforward_channels=256)
OUT = (0, 1, 2)


def randomize(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'relative_position_bias_table' in name:
                continue  # MAE's is zero; DyTViT has none
            is_norm_weight = param.dim() == 1 and name.endswith('weight') \
                and ('ln' in name or 'norm' in name)
            param.copy_(1 + 0.1 * torch.randn_like(param) if is_norm_weight
                        else 0.1 * torch.randn_like(param))
    model.eval()  # some train() overrides return None
    return model


def convert_and_load(tmp_path, state_dict, src_format='auto',
                     out_type='featmap', **kwargs):
    """Convert through the command-line tool, load into DyTViT."""
    src, dst = str(tmp_path / 'src.pth'), str(tmp_path / 'dst.pth')
    torch.save(state_dict, src)
    args = [src, dst, '--src-format', src_format]
    if 'img_size' in kwargs:
        args += ['--img-size', str(kwargs['img_size'])]
    tool = osp.join(REPO_ROOT, 'tools/model_converters/convert_checkpoint.py')
    with mock.patch.object(sys, 'argv', [tool, *args]):
        runpy.run_path(tool, run_name='__main__')
    meta_args = dict(torch.load(dst)['meta']['dyt_vit_args'])
    model = DyTViT(
        arch=dict(ARCH), out_indices=OUT, out_type=out_type,
        **{k: v for k, v in meta_args.items() if k != 'arch'},
        init_cfg=dict(type='Pretrained', checkpoint=dst))
    model.init_weights()
    return model.eval(), meta_args


def assert_blocks_close(expected, got):
    assert len(expected) == len(got)
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)


def test_mmseg_vit(tmp_path):
    from mmseg.models.backbones import VisionTransformer
    source = randomize(VisionTransformer(
        img_size=32, patch_size=8, embed_dims=64, num_layers=3, num_heads=4,
        mlp_ratio=4, out_indices=OUT, qkv_bias=True, final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6)))
    assert detect_layout(source.state_dict()) == 'mmseg-vit'
    model, args = convert_and_load(tmp_path, source.state_dict())
    assert args['final_norm'] and args['with_cls_token']
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_blocks_close(source(x), model(x, complete=True))


def test_mmseg_vit_with_pre_norm_is_unconvertible():
    from mmseg.models.backbones import VisionTransformer
    source = VisionTransformer(img_size=32, patch_size=8, embed_dims=64,
                               num_layers=1, num_heads=4, pre_norm=True)
    with pytest.raises(ValueError, match=r'ln_pre\.weight: LayerNorm before'):
        convert_vit_checkpoint(source.state_dict()).check()


def test_mmseg_mae(tmp_path):
    from mmseg.models.backbones import MAE
    source = randomize(MAE(
        img_size=32, patch_size=8, embed_dims=64, num_layers=3, num_heads=4,
        mlp_ratio=4, out_indices=OUT, final_norm=True, init_values=0.1,
        norm_cfg=dict(type='LN', eps=1e-6)))
    state_dict = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state_dict['decode_head.conv_seg.weight'] = torch.zeros(2, 64, 1, 1)
    result = convert_vit_checkpoint(state_dict)
    assert result.dropped['decode_head.conv_seg.weight'] == \
        'outside the backbone'
    assert 'layers.0.attn.relative_position_bias_table' in result.dropped
    model, args = convert_and_load(tmp_path, state_dict)
    assert args['layer_scale_init_value']
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_blocks_close(source(x), model(x, complete=True))

    # a trained relative position bias has no DyTViT equivalent
    with torch.no_grad():
        source.layers[1].attn.relative_position_bias_table.fill_(0.5)
    with pytest.raises(ValueError, match=r'layers\.1\.attn\.relative_pos'
                       r'ition_bias_table: relative position bias with'):
        convert_vit_checkpoint(source.state_dict()).check()


def test_mmseg_beit_style_qv_bias_is_merged():
    weights = {'layers.0.attn.q_bias': torch.ones(4),
               'layers.0.attn.v_bias': 2 * torch.ones(4),
               'layers.0.attn.qkv.weight': torch.zeros(12, 4)}
    result = convert_vit_checkpoint(weights, 'mmseg-mae')
    assert result.state_dict['blocks.0.attn.qkv.bias'].tolist() == \
        [1.] * 4 + [0.] * 4 + [2.] * 4


def to_mmpretrain_layout(timm_state_dict):
    """mmpretrain 1.2 ViT keys (``vision_transformer.py``:
    ``TransformerEncoderLayer`` with ``ln1``, ``attn`` (MultiheadAttention:
    ``qkv``, ``proj``, layer scale ``gamma1``), ``ln2``, ``ffn`` (FFN:
    ``layers.0.0``, ``layers.1``, layer scale ``gamma2``); final norm
    ``ln1``), written independently of the converter's rules."""
    out = {}
    for key, value in timm_state_dict.items():
        key = key.replace('patch_embed.proj.', 'patch_embed.projection.')
        key = key.replace('blocks.', 'layers.').replace('.norm1.', '.ln1.')
        key = key.replace('.norm2.', '.ln2.').replace('.mlp.fc1.',
                                                      '.ffn.layers.0.0.')
        key = key.replace('.mlp.fc2.', '.ffn.layers.1.')
        key = key.replace('.ls1.gamma', '.attn.gamma1.weight')
        key = key.replace('.ls2.gamma', '.ffn.gamma2.weight')
        if key.startswith('norm.'):
            key = 'ln1.' + key[len('norm.'):]
        out[key] = value
    return out


def test_mmpretrain_vit_round_trip(tmp_path):
    """mmpretrain is not installed (and does not import with these pins
    without its own dependencies): a hand-built state dict in its layout."""
    reference = randomize(DyTViT(
        arch=dict(ARCH), img_size=32, patch_size=8, out_indices=OUT,
        final_norm=True, layer_scale_init_value=0.1, dispatch=None))
    timm_weights = {k: v for k, v in reference.state_dict().items()
                    if '_adapter.' not in k}
    source = to_mmpretrain_layout(timm_weights)
    source['ln2.weight'] = torch.ones(64)  # out_type='avg_featmap' norm
    assert detect_layout(source) == 'mmpretrain-vit'
    result = convert_vit_checkpoint(source)
    result.check()
    assert set(result.state_dict) == set(timm_weights)
    for key, value in timm_weights.items():
        assert torch.equal(result.state_dict[key], value), key
    assert 'ln2.weight' in result.dropped
    with pytest.raises(ValueError, match=r'pre_norm\.weight: LayerNorm'):
        convert_vit_checkpoint({**source, 'pre_norm.weight': torch.ones(64)},
                               'mmpretrain-vit').check()


def test_mmpretrain_vit_model(tmp_path):
    """The real mmpretrain model, where it is installed."""
    backbones = pytest.importorskip('mmpretrain.models.backbones')
    source = randomize(backbones.VisionTransformer(
        arch=dict(ARCH), img_size=32, patch_size=8, out_indices=list(OUT),
        out_type='featmap', final_norm=True, layer_scale_init_value=0.1))
    model, _ = convert_and_load(tmp_path, source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_blocks_close(source(x), model(x, complete=True))


def test_original_mae_layout(tmp_path):
    import timm
    vit = randomize(timm.create_model(
        'vit_base_patch16_224', img_size=32, patch_size=8, embed_dim=64,
        depth=3, num_heads=4, num_classes=0))
    weights = dict(vit.state_dict())
    source = {**weights, 'mask_token': torch.zeros(1, 1, 32),
              'decoder_embed.weight': torch.zeros(32, 64),
              'decoder_blocks.0.norm1.weight': torch.ones(32)}
    assert detect_layout(source) == 'mae'
    result = convert_vit_checkpoint(source)
    result.check()
    assert result.state_dict.keys() == weights.keys()
    assert set(result.dropped) == {'mask_token', 'decoder_embed.weight',
                                   'decoder_blocks.0.norm1.weight'}
    model, _ = convert_and_load(tmp_path, source)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = vit.forward_features(x)
        got = model.eval()(x, complete=True)[-1]
    torch.testing.assert_close(got.flatten(2).transpose(1, 2),
                               want[:, 1:], rtol=1e-4, atol=1e-4)


def test_videomae_equals_per_frame_dyt_vit_on_a_static_tubelet(tmp_path):
    """VideoMAE (joint space-time attention on 2-frame tubelets) and the
    converted per-frame DyTViT are the same network on a static clip of 2
    frames: one temporal slot."""
    from mmaction.models.backbones.vit_mae import VisionTransformer
    source = randomize(VisionTransformer(
        img_size=32, patch_size=8, embed_dims=64, depth=3, num_heads=4,
        num_frames=2, tubelet_size=2, init_values=0.1,
        use_mean_pooling=False, return_feat_map=True))
    blocks = []
    for block in source.blocks:
        block.register_forward_hook(lambda m, i, o: blocks.append(o))
    state_dict = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state_dict['cls_head.fc_cls.weight'] = torch.zeros(5, 64)
    assert detect_layout(convert_vit_checkpoint.__globals__[
        'strip_backbone_prefix'](state_dict)[0]) == 'videomae'
    model, args = convert_and_load(tmp_path, state_dict, src_format='videomae',
                                   out_type='raw', img_size=32)
    assert args['with_cls_token'] is False and args['final_norm']
    frame = torch.randn(2, 3, 32, 32)
    clip = frame[:, :, None].expand(-1, -1, 2, -1, -1)  # static, T = 2
    with torch.no_grad():
        final = source(clip)  # (B, C, 1, h, w), after the final norm
        got = model(frame, complete=True)
    assert_blocks_close(blocks[:-1], got[:-1])
    torch.testing.assert_close(
        got[-1], final.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)
    # the same weights per frame of a video input
    video = model(clip, complete=True)[-1]  # (B, T, L, C)
    torch.testing.assert_close(video[:, 0], got[-1])
    torch.testing.assert_close(video[:, 1], got[-1])


def test_unknown_layouts_and_keys_are_reported():
    with pytest.raises(ValueError, match='cannot tell the layout'):
        convert_vit_checkpoint({'conv1.weight': torch.zeros(1)})
    import timm
    timm_weights = timm.create_model(
        'vit_tiny_patch16_224', depth=1).state_dict()
    with pytest.raises(ValueError, match='already a timm-format ViT'):
        convert_vit_checkpoint(timm_weights)
    result = convert_vit_checkpoint(
        {'layers.0.attn.attn.in_proj_weight': torch.zeros(12, 4),
         'layers.0.attn.attn.mystery': torch.zeros(1)})
    with pytest.raises(ValueError, match=r'(?s)1 keys cannot be converted.*'
                       r'mystery: matches no rule'):
        result.check()
    with pytest.raises(ValueError, match='src_format must be one of'):
        convert_vit_checkpoint(timm_weights, 'mmdet-vit')


def test_loading_another_layout_suggests_the_converter(tmp_path):
    from mmseg.models.backbones import VisionTransformer
    path = str(tmp_path / 'mmseg_vit.pth')
    torch.save(VisionTransformer(img_size=32, patch_size=8, embed_dims=64,
                                 num_layers=3, num_heads=4).state_dict(), path)
    model = DyTViT(arch=dict(ARCH), img_size=32, patch_size=8,
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r'looks like a mmseg-vit checkpoint'
                       r'.*tools/model_converters/convert_checkpoint\.py'):
        model.init_weights()
