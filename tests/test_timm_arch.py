"""DyTViT(timm_arch=...): the ViTs people adapt today, their layout read
from timm (DINOv2 with and without registers, ViT-L), equal to timm's
``forward_features`` on the same random weights; register and cls tokens
are never skipped."""
import pytest
import torch

from mmdyt.models import DyTViT
from mmdyt.models.backbones.timm_arch import timm_arch_kwargs
from mmdyt.models.flops import dyt_vit_flops
from mmdyt_tools.twins import randomize_adapters


def dyt_like_timm(tmp_path, name, size):
    """timm's model ``name`` (random weights) and a DyTViT loading them
    through the real checkpoint path."""
    import timm
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False,
                                  img_size=size).eval()
    path = str(tmp_path / f'{name}.pth')
    torch.save(reference.state_dict(), path)
    model = DyTViT(timm_arch=name, img_size=size, out_type='raw',
                   final_norm=True,
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    return reference, model.eval()


@pytest.mark.parametrize('name, size', [
    ('vit_base_patch14_reg4_dinov2', 224),
    ('vit_base_patch14_reg4_dinov2', 518),
    ('vit_base_patch14_dinov2', 224),
])
def test_dinov2_complete_path_equals_timm(tmp_path, name, size):
    reference, model = dyt_like_timm(tmp_path, name, size)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = reference.forward_features(x)
        got = model(x, complete=True)[0]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert model.num_prefix_tokens == reference.num_prefix_tokens
    assert model.patch_grid == (size // 14, ) * 2


def test_dinov2_layout_comes_from_timm():
    kwargs = timm_arch_kwargs('vit_base_patch14_reg4_dinov2')
    assert kwargs == dict(
        arch=dict(embed_dims=768, num_layers=12, num_heads=12,
                  feedforward_channels=3072),
        patch_size=14, with_cls_token=True, num_reg_tokens=4,
        no_embed_class=True, layer_scale_init_value=1e-5, qkv_bias=True)
    model = DyTViT(timm_arch='vit_base_patch14_reg4_dinov2', img_size=56)
    assert model.pos_embed.shape == (1, 16, 768)  # patches only
    assert model.reg_token.shape == (1, 4, 768)
    assert not model.reg_token.requires_grad  # pre-trained, frozen


def test_registers_and_cls_are_never_skipped():
    torch.manual_seed(0)
    model = DyTViT(timm_arch='vit_base_patch14_reg4_dinov2', img_size=56,
                   out_type='raw').eval()
    with torch.no_grad():
        for dispatcher in model.dispatchers():
            dispatcher.linear.bias.fill_(-1e4)  # skip every patch token
    rows = []
    handles = [b.mlp.register_forward_hook(
        lambda m, args, out: rows.append(args[0].shape[0]))
        for b in model.blocks]
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        out, masks = model.forward_with_masks(x)
    for handle in handles:
        handle.remove()
    # every block's MLP ran on the 5 prefix tokens (cls + 4 registers) of
    # each image, and on nothing else
    assert rows == [2 * 5] * 12
    assert all(m.shape == (2, 16) and not m.any() for m in masks)
    # and the prefix tokens got exactly the complete model's values
    with torch.no_grad():
        complete = model(x, complete=True)[0]
    torch.testing.assert_close(out[0][:, 0], complete[:, 0])


def test_gathered_equals_reference_gather_with_registers():
    from mmdyt_tools.benchmark.peers import ReferenceGatherDyT
    torch.manual_seed(0)
    model = DyTViT(timm_arch='vit_base_patch14_reg4_dinov2', img_size=84,
                   out_type='raw', final_norm=True).eval()
    randomize_adapters(model)
    x = torch.randn(2, 3, 84, 84)
    with torch.no_grad():
        got = model(x)[0]
        expected = ReferenceGatherDyT(model)(x)
    assert 0.2 < model.activation_rate() < 0.8
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_vit_large_equals_timm_and_counts_table_18_flops():
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('vit_large_patch16_224',
                                  pretrained=False).eval()
    model = DyTViT(timm_arch='vit_large_patch16_224', out_type='raw',
                   final_norm=True).eval()
    # the weights in memory (the file path is the DINOv2 tests'): 1.2 GB
    missing, unexpected = model.load_state_dict(reference.state_dict(),
                                                strict=False)
    assert all('_adapter.' in k or '_dispatcher.' in k for k in missing)
    assert set(unexpected) == {'head.weight', 'head.bias'}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x, complete=True)[0],
                                   reference.forward_features(x),
                                   atol=1e-4, rtol=0)
    dense = dyt_vit_flops(model, (224, 224), with_dyt=False).total
    assert round(dense / 1e9, 2) == 61.60  # the paper's Table 18


def test_timm_arch_errors_name_the_problem():
    with pytest.raises(ValueError, match="no model 'vit_base_patch14_dino'"):
        DyTViT(timm_arch='vit_base_patch14_dino')
    with pytest.raises(ValueError, match='GluMlp'):  # DINOv2-g's SwiGLU MLP
        DyTViT(timm_arch='vit_giant_patch14_dinov2')
    with pytest.raises(ValueError, match='not a timm VisionTransformer'):
        DyTViT(timm_arch='resnet18')
