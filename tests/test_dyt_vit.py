"""DyTViT: equivalence with timm, outputs, training, checkpoints, errors."""
import pytest
import torch

from helpers import save_timm_vit
from mmdyt.models import DyTViT

OUT_INDICES = (3, 5, 7, 11)


def timm_block_outputs(model, x, indices=OUT_INDICES):
    tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    outs = []
    for i, block in enumerate(model.blocks):
        tokens = block(tokens)
        if i in indices:
            outs.append(tokens)
    return outs


def load_vit_b(path, **kwargs):
    model = DyTViT(
        arch='base',
        out_indices=OUT_INDICES,
        init_cfg=dict(type='Pretrained', checkpoint=path),
        **kwargs)
    model.init_weights()
    return model.eval()


@torch.no_grad()
def test_complete_model_equals_timm_vit_b_for_images(timm_vit_b):
    reference, path = timm_vit_b
    model = load_vit_b(path, out_type='raw')
    x = torch.randn(2, 3, 224, 224)
    for ours, theirs in zip(model(x, complete=True),
                            timm_block_outputs(reference, x)):
        assert (ours - theirs).abs().max() < 1e-4


@torch.no_grad()
def test_complete_model_equals_timm_vit_b_per_frame(timm_vit_b):
    reference, path = timm_vit_b
    model = load_vit_b(path, out_type='featmap')
    video = torch.randn(1, 3, 2, 224, 224)  # N, C, T, H, W
    outs = model(video, complete=True)
    assert outs[0].shape == (1, 768, 2, 14, 14)
    for t in range(2):
        frame_ref = timm_block_outputs(reference, video[:, :, t])
        for ours, theirs in zip(outs, frame_ref):
            patches = theirs[:, 1:].transpose(1, 2).reshape(1, 768, 14, 14)
            assert (ours[:, :, t] - patches).abs().max() < 1e-4


def test_trainable_parameters_of_vit_b(timm_vit_b):
    model = DyTViT(arch='base', adapter_cfg=dict(type='Adapter',
                                                 bottleneck=64))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # 12 x (adapter 768*64*2 + 64 + 768, dispatcher 768 + 1)
    assert trainable == 12 * (99136 + 769) == 1_198_860
    print(f'ViT-B DyT (d=64): {trainable:,} trainable of {total:,} '
          f'parameters ({100 * trainable / total:.2f}%)')
    assert trainable / total < 0.02


def test_gradients_reach_dispatchers_and_adapters_only():
    model = DyTViT(arch='tiny', img_size=32, out_indices=(5, 11),
                   dispatch='attn_mlp').train()
    with torch.no_grad():  # let gradients reach the down-projections too
        for block in model.blocks:
            block.mlp_adapter.up.weight.normal_(0, 0.1)
    feats = model(torch.randn(2, 3, 32, 32))
    rate = torch.stack([m.mean() for m in model.dispatch_masks]).mean()
    (sum(f.square().mean() for f in feats) + rate).backward()
    for name, param in model.named_parameters():
        if '_dispatcher.' in name or '_adapter.' in name:
            assert param.requires_grad, name
            if 'attn_adapter.down' not in name:
                assert param.grad is not None and param.grad.abs().sum() > 0, \
                    name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_not_frozen_trains_everything():
    model = DyTViT(arch='tiny', img_size=32, frozen=False)
    assert all(p.requires_grad for p in model.parameters())


def test_dispatch_masks_and_activation_rate():
    model = DyTViT(arch='tiny', img_size=32, out_indices=-1).eval()
    x = torch.randn(3, 3, 32, 32)
    model(x)
    assert len(model.dispatch_masks) == 12
    assert all(m.shape == (3, 4) for m in model.dispatch_masks)
    expected = torch.stack(model.dispatch_masks).mean().item()
    assert model.activation_rate() == pytest.approx(expected)
    # a complete forward returns all-ones masks and leaves the dynamic
    # forward's masks in place (the rate loss and the statistics read them)
    dynamic = model.dispatch_masks
    _, complete_masks = model.forward_with_masks(x, complete=True)
    assert all(bool((m == 1).all()) for m in complete_masks)
    assert model.dispatch_masks is dynamic
    assert model.activation_rate() == pytest.approx(expected)
    video = torch.randn(2, 3, 5, 32, 32)
    model(video)
    assert all(m.shape == (10, 4) for m in model.dispatch_masks)


def test_adapter_only_model_has_no_rate():
    model = DyTViT(arch='tiny', img_size=32, dispatch=None)
    model(torch.randn(1, 3, 32, 32))
    assert model.activation_rate() is None
    assert model.dispatch_sites == []


def test_dispatch_layers():
    model = DyTViT(arch='tiny', img_size=32, dispatch_layers=(0, -1))
    assert model.dispatch_sites == [(0, 'mlp'), (11, 'mlp')]
    assert model.blocks[5].mlp_adapter is not None


def test_threshold_changes_rate_monotonically():
    model = DyTViT(arch='tiny', img_size=64).eval()
    with torch.no_grad():  # a spread of scores, as a trained model has
        for dispatcher in model.dispatchers():
            dispatcher.linear.weight.normal_(0, 1)
    x = torch.randn(4, 3, 64, 64)
    rates = []
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        model.set_dispatch_threshold(threshold)
        model(x)
        rates.append(model.activation_rate())
    assert rates == sorted(rates, reverse=True)
    assert rates[0] > rates[-1]


@pytest.mark.parametrize('out_type, shape', [
    ('featmap', (2, 192, 3, 4)),
    ('raw', (2, 13, 192)),
    ('cls_token', (2, 192)),
])
def test_out_types_and_non_square_inputs(out_type, shape):
    model = DyTViT(arch='tiny', img_size=32, out_type=out_type).eval()
    (out, ) = model(torch.randn(2, 3, 48, 64))
    assert out.shape == shape


def test_video_raw_output_keeps_every_frame_cls_token():
    model = DyTViT(arch='tiny', img_size=32, out_type='raw', final_norm=True)
    (out, ) = model(torch.randn(2, 3, 4, 32, 32))
    assert out.shape == (2, 4, 5, 192)


def test_pos_embed_is_resampled_when_loading(tmp_path):
    path = str(tmp_path / 'vit_s.pth')
    reference = save_timm_vit(path, 'vit_small_patch16_224', num_classes=0)
    model = DyTViT(arch='small', img_size=64, out_type='raw',
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    assert model.pos_embed.shape == (1, 1 + 16, 384)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight,
                               reference.blocks[3].mlp.fc1.weight)
    torch.testing.assert_close(model.pos_embed[:, 0],
                               reference.pos_embed[:, 0])


def test_pos_embed_resampling_is_the_releases_bicubic(tmp_path):
    """14x14 -> 32x32 (the segmentation recipe) as the authors' release
    resamples: F.interpolate(bicubic, align_corners=False), no
    anti-aliasing, computed independently here from the checkpoint."""
    import torch.nn.functional as F
    path = str(tmp_path / 'vit_t.pth')
    reference = save_timm_vit(path, 'vit_tiny_patch16_224', num_classes=0)
    model = DyTViT(arch='tiny', img_size=512, out_type='raw',
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    table = reference.pos_embed.detach()
    grid = table[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode='bicubic',
                             align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 1024, 192)
    torch.testing.assert_close(model.pos_embed[:, 1:].detach(), expected,
                               rtol=0, atol=0)
    torch.testing.assert_close(model.pos_embed[:, :1].detach(),
                               table[:, :1], rtol=0, atol=0)
    # at run time, other sizes resample the model's own table the same way
    from mmdyt.models.layers.pos_embed import resample_pos_embed
    wide = resample_pos_embed(model.pos_embed, (32, 48), 1)
    assert wide.shape == (1, 1 + 32 * 48, 192)
    with pytest.raises(ValueError, match='expected .1, prefix . 5.5'):
        resample_pos_embed(model.pos_embed, (4, 4), 1, old_grid=(5, 5))


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), "arch 'huge' is not one of"),
    (dict(arch=dict(embed_dims=8)), 'lacks the keys'),
    (dict(dispatch='token'), 'dispatch must be one of'),
    (dict(out_indices=12), 'out_indices contains 12'),
    (dict(out_indices=(-13, )), 'out_indices contains -13'),
    (dict(dispatch_layers=(20, )), 'dispatch_layers contains 20'),
    (dict(out_type='tokens'), 'out_type must be one of'),
    (dict(dispatcher_cfg=dict(threshold=1.2)), 'threshold'),
    (dict(dispatcher_cfg=dict(tau=0)), 'tau'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DyTViT(**{'arch': 'tiny', 'img_size': 32, **kwargs})


@pytest.mark.parametrize('shape', [(1, 3, 30, 32), (1, 3, 8, 8), (1, 3, 32),
                                   (1, 1, 32, 32)])
def test_bad_input_shapes(shape):
    model = DyTViT(arch='tiny', img_size=32)
    with pytest.raises(ValueError, match='DyTViT expects|patch size'):
        model(torch.randn(*shape))


def test_checkpoint_that_does_not_fit(tmp_path, timm_vit_b):
    _, path = timm_vit_b
    model = DyTViT(arch='small', init_cfg=dict(type='Pretrained',
                                               checkpoint=path))
    with pytest.raises(ValueError, match=r'does not fit .* shapes differ'):
        model.init_weights()


def test_checkpoint_of_another_architecture(tmp_path):
    import torchvision
    path = str(tmp_path / 'resnet.pth')
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = DyTViT(arch='tiny', init_cfg=dict(type='Pretrained',
                                              checkpoint=path))
    with pytest.raises(ValueError, match='not a timm-format ViT'):
        model.init_weights()


def test_checkpoint_with_too_few_blocks(tmp_path):
    path = str(tmp_path / 'vit_t.pth')
    save_timm_vit(path, 'vit_tiny_patch16_224', depth=6)
    model = DyTViT(arch='tiny', init_cfg=dict(type='Pretrained',
                                              checkpoint=path))
    with pytest.raises(ValueError, match=r'lacks 72 pre-trained .*blocks\.6'):
        model.init_weights()
