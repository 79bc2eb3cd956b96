"""FLOPs: the analytic DyTViT model against mmengine's counter, and whole
models (backbone + neck + heads) at measured rates."""
import pytest
import timm
import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

from helpers import TINY, register_tiny_video_head
from mmdyt.engine import RateMeter
from mmdyt.models import DISPATCH_MODES, DyTViT
from mmdyt.models.flops import dyt_vit_flops
from mmdyt.registry import build_model
from mmdyt_tools.flops import (count_flops, flops_by_operator,
                               measure_rates_on_random, model_flops_report)


@pytest.fixture
def tiny_video_head():
    return register_tiny_video_head()


def timm_vit(model_name, img_size, fused_attn=True):
    model = timm.create_model(
        model_name, pretrained=False, num_classes=0, img_size=img_size).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    return model, torch.randn(1, 3, img_size, img_size)


@pytest.fixture(scope='module')
def dyt_vit_b():
    return DyTViT(arch='base', final_norm=True)


@pytest.mark.parametrize('model_name, arch, img_size', [
    ('vit_base_patch16_224', 'base', 224),
    ('vit_tiny_patch16_224', 'tiny', 64),
])
def test_dense_vit_matches_mmengine_counter(model_name, arch, img_size,
                                            dyt_vit_b):
    counted = count_flops(*timm_vit(model_name, img_size))
    backbone = dyt_vit_b if arch == 'base' else DyTViT(
        arch=arch, img_size=img_size, final_norm=True)
    analytic = dyt_vit_flops(backbone, (img_size, img_size),
                             with_dyt=False).total
    assert abs(analytic - counted) / counted < 0.02
    assert analytic == pytest.approx(counted, rel=1e-9)  # same rules: exact


def test_vit_b_224_is_17_58_gflops(dyt_vit_b):
    report = dyt_vit_flops(dyt_vit_b, (224, 224), with_dyt=False)
    # the paper's 17.58; 17.56 of it are matmuls and the patch embedding
    assert report.total / 1e9 == pytest.approx(17.58, abs=0.005)
    norms = 25 * 197 * 768 * 5
    assert (report.total - norms) / 1e9 == pytest.approx(17.56, abs=0.005)


def test_sdpa_rule_equals_explicit_attention():
    """timm's fused attention counts as its two matmuls would."""
    by_op = flops_by_operator(*timm_vit('vit_tiny_patch16_224', 32))
    # 12 blocks x (q k^T + attn v) of 5 tokens, 192 channels
    assert by_op['scaled_dot_product_attention'] == 12 * 2 * 5 * 5 * 192
    explicit = flops_by_operator(
        *timm_vit('vit_tiny_patch16_224', 32, fused_attn=False))
    assert 'scaled_dot_product_attention' not in explicit
    assert sum(explicit.values()) == sum(by_op.values())


def random_dyt(dispatch, adapter='Adapter', img_size=32, **kwargs):
    model = DyTViT(
        arch=TINY,
        img_size=img_size,
        patch_size=8,
        final_norm=True,
        dispatch=dispatch,
        adapter_cfg=dict(type=adapter),
        **kwargs).eval()
    with torch.no_grad():  # a spread of decisions, as a trained model has
        for dispatcher in model.dispatchers():
            dispatcher.linear.weight.normal_(0, 1)
    return model


@pytest.mark.parametrize('adapter', ['Adapter', 'MoEAdapter'])
@pytest.mark.parametrize('dispatch', DISPATCH_MODES)
def test_gathered_eval_path_matches_counter(dispatch, adapter):
    """The counter traces what really runs: only active tokens' work."""
    model = random_dyt(dispatch, adapter)
    inputs = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(inputs)
    rates = [float(m.mean()) for m in model.dispatch_masks]
    if dispatch not in ('layer', None):
        assert 0 < sum(rates) / len(rates) < 1
    analytic = dyt_vit_flops(model, (32, 32), rates).total
    # one token's MLP is 0.5% of the total: 1e-4 tolerates only the
    # rounding of mmengine's einsum rule in the MoE merge (E per merge)
    assert count_flops(model, inputs) == pytest.approx(analytic, rel=1e-4)


def test_prepacked_model_counts_as_the_plain_one():
    """A traced pre-packed model runs (and counts) the plain kernels."""
    model = random_dyt('mlp', prepack_weights=True)
    plain = random_dyt('mlp')
    plain.load_state_dict(model.state_dict())
    inputs = torch.randn(1, 3, 32, 32)
    assert count_flops(model, inputs) == count_flops(plain, inputs) > 0


def test_video_is_frames_times_image():
    model = random_dyt('mlp')
    video = torch.randn(1, 3, 5, 32, 32)
    with RateMeter(model) as meter, torch.no_grad():
        model(video)
    assert meter.num_images == 5
    per_frame = dyt_vit_flops(model, (32, 32), meter.rates).total
    assert count_flops(model, video) == pytest.approx(5 * per_frame,
                                                      rel=1e-5)


@pytest.mark.parametrize('dispatch', ['mlp', 'attn', 'attn_mlp', 'layer'])
def test_flops_grow_with_the_rate(dispatch):
    model = random_dyt(dispatch, img_size=64)
    sites = len(model.dispatch_sites)
    flops = [
        dyt_vit_flops(model, (64, 64), [rate] * sites).total
        for rate in (0., 0.25, 0.5, 0.75, 1.)
    ]
    assert flops == sorted(flops) and len(set(flops)) == 5
    assert flops[-1] == dyt_vit_flops(model, (64, 64)).total


def test_variants_count_what_they_skip():
    size, dims = (64, 64), TINY['embed_dims']
    hidden = TINY['feedforward_channels']
    patches, tokens = 64, 65
    mlp = random_dyt('mlp', img_size=64)
    layer = random_dyt('layer', img_size=64)
    both = random_dyt('attn_mlp', img_size=64)
    moe = random_dyt('mlp', 'MoEAdapter', img_size=64)
    adapter_only = random_dyt(None, img_size=64)
    dense = dyt_vit_flops(adapter_only, size, with_dyt=False).blocks[0]
    adapter = 2 * tokens * dims * 64
    # adapter-only: the dense block plus one adapter per block
    assert dyt_vit_flops(adapter_only, size).blocks[0] == dense + adapter
    # MLP dispatch at rate 0: only the cls token's MLP (and LayerNorm) runs
    mlp_part = 2 * dims * hidden + 5 * dims
    skipped = dyt_vit_flops(mlp, size, [0.] * 4).blocks[0]
    # (the dispatcher scores every token in evaluation, the cls token too)
    assert skipped == dense - patches * mlp_part + adapter + dims * tokens
    # layer dispatch at rate 0: the adapter and the cls-token dispatcher
    assert dyt_vit_flops(layer, size, [0.] * 4).blocks[0] == adapter + dims
    # attention-MLP dispatch: two adapters and two dispatchers per block
    assert dyt_vit_flops(both, size).blocks[0] == \
        dense + 2 * adapter + 2 * dims * tokens
    # the MoE adapter costs one adapter plus a small per-image merge
    merge = dyt_vit_flops(moe, size).blocks[0] - \
        dyt_vit_flops(mlp, size).blocks[0]
    assert 0 < merge < adapter


def test_final_norm_only_when_last_block_runs():
    kwargs = dict(arch=TINY, img_size=32, patch_size=8, final_norm=True)
    full = dyt_vit_flops(DyTViT(**kwargs), (32, 32))
    early = dyt_vit_flops(DyTViT(out_indices=0, **kwargs), (32, 32))
    assert full.final_norm == 17 * 32 * 5
    assert early.final_norm == 0 and len(early.blocks) == 1


def test_wrong_number_of_rates():
    with pytest.raises(ValueError, match='got 2 rates for 4 dispatchers'):
        dyt_vit_flops(random_dyt('mlp'), (32, 32), [0.5, 0.5])


def test_rate_meter_weights_tokens_over_forwards():
    model = random_dyt('mlp')
    with RateMeter(model) as meter, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
        first = [m.clone() for m in model.dispatch_masks]
        model(torch.randn(3, 3, 32, 32))
        second = model.dispatch_masks
    expected = [
        float(torch.cat([a, b]).mean()) for a, b in zip(first, second)
    ]
    assert meter.rates == pytest.approx(expected)
    assert meter.num_images == 5 and meter.num_forwards == 2
    model(torch.randn(1, 3, 32, 32))  # the hook is gone
    assert meter.num_forwards == 2


def seg_model(dispatch='mlp'):
    init_default_scope('mmseg')
    norm_cfg = dict(type='SyncBN', requires_grad=True)
    cfg = dict(
        type='DyTEncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(
            type='DyTViT',
            arch=TINY,
            img_size=32,
            patch_size=8,
            out_indices=(0, 1, 2, 3),
            dispatch=dispatch),
        neck=dict(
            type='Feature2Pyramid',
            embed_dim=32,
            rescales=[4, 2, 1, 0.5],
            norm_cfg=norm_cfg),
        decode_head=dict(
            type='UPerHead',
            in_channels=[32] * 4,
            in_index=[0, 1, 2, 3],
            channels=16,
            num_classes=3,
            norm_cfg=norm_cfg),
        auxiliary_head=dict(
            type='FCNHead',
            in_channels=32,
            in_index=2,
            channels=8,
            num_convs=1,
            num_classes=3,
            norm_cfg=norm_cfg),
        test_cfg=dict(mode='whole'))
    return revert_sync_batchnorm(build_model(cfg)).eval()


def test_whole_segmentor_matches_counter():
    model = seg_model()
    rates = measure_rates_on_random(model.backbone, (3, 32, 32), 3)
    # the same inputs, masks averaged here: the meter's per-site rates
    generator = torch.Generator().manual_seed(0)
    masks = [model.backbone.forward_with_masks(
        torch.randn(1, 3, 32, 32, generator=generator))[1] for _ in range(3)]
    expected = [float(torch.cat([m[i] for m in masks]).double().mean())
                for i in range(4)]
    assert rates == pytest.approx(expected, abs=1e-9)
    report = model_flops_report(model, (3, 32, 32), rates, 'random', 3)
    assert report.inference_parts == ('neck', 'decode_head')
    assert set(report.parts) == {'neck', 'decode_head', 'auxiliary_head'}
    assert report.backbone['dense'] < report.backbone['complete']
    assert report.backbone['dyt'] < report.backbone['complete']
    table = report.format_table()
    assert '| whole model |' in table and 'training only' in table
    assert report.to_dict()['gflops']['backbone']['dyt'] == \
        pytest.approx(report.backbone['dyt'] / 1e9)

    # the counter's trace of the whole model in tensor mode (backbone at
    # this input's rates, neck, decode head) equals the report
    with torch.no_grad():
        for dispatcher in model.backbone.dispatchers():
            dispatcher.linear.weight.normal_(0, 1)  # no site all-on/off
    inputs = torch.randn(1, 3, 32, 32)
    with RateMeter(model.backbone) as meter, torch.no_grad():
        model.backbone(inputs)
    assert all(0 < r < 1 for r in meter.rates)
    report = model_flops_report(model, (3, 32, 32), meter.rates)
    counted = count_flops(model, inputs)
    assert counted == pytest.approx(report.whole('dyt'), rel=1e-6)


def test_video_recognizer_report(tiny_video_head):
    init_default_scope('mmaction')
    model = build_model(
        dict(
            type='Recognizer3D',
            backbone=dict(
                type='DyTViT', arch=TINY, img_size=32, patch_size=8),
            cls_head=dict(
                type=tiny_video_head, in_channels=32, num_classes=4))).eval()
    report = model_flops_report(model, (3, 4, 32, 32))
    per_frame = dyt_vit_flops(model.backbone, (32, 32)).total
    assert report.backbone['complete'] == 4 * per_frame
    assert report.inference_parts == ('cls_head', )
    assert report.parts['cls_head'] == 32 * 4  # the linear classifier
    assert report.whole('dyt') == report.whole('complete')  # no rates given


def random_vitdet(dispatch='mlp', img_size=(40, 56)):
    """A tiny ViTDet-style DyTViT: windows of 3 (a 5x7 grid, padded to
    6x9), one global block, decomposed relative positions."""
    return random_dyt(dispatch, img_size=img_size, with_cls_token=False,
                      window_size=3, global_attn_indexes=(2, ),
                      use_rel_pos=True)


@pytest.mark.parametrize('dispatch', ['mlp', 'layer', None])
def test_vitdet_attention_matches_counter(dispatch):
    """Windows (with padding), the global block and the decomposed
    relative positions are counted as the traced forward computes them."""
    model = random_vitdet(dispatch)
    inputs = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        model(inputs)
    rates = [float(m.mean()) for m in model.dispatch_masks]
    analytic = dyt_vit_flops(model, (40, 56), rates).total
    # 1e-5: mmengine's einsum rule (numpy's einsum_path count, halved and
    # floored) gives a few FLOPs more than the relative-position einsums'
    # multiply-accumulates (6 of 2.4M here)
    assert count_flops(model, inputs) == pytest.approx(analytic, rel=1e-5)
    if dispatch is None:  # adapters cost a little more than the dense ViT
        assert analytic > dyt_vit_flops(model, (40, 56), with_dyt=False).total


def test_vitdet_b_backbone_and_simple_fpn_are_the_papers_554_86():
    """The paper's Table 11: dense ViTDet-B + FPN at 1024x1024, 554.86 G
    (multiply-accumulates, the qkv/proj of windowed blocks on the padded
    70x70 grid)."""
    from mmdyt.models import SimpleFPN
    backbone = DyTViT(arch='base', img_size=1024, with_cls_token=False,
                      window_size=14, global_attn_indexes=(2, 5, 8, 11),
                      use_rel_pos=True)
    dense = dyt_vit_flops(backbone, (1024, 1024), with_dyt=False).total
    neck = count_flops(SimpleFPN(768).eval(),
                       ((torch.randn(1, 768, 64, 64), ), ))
    assert (dense + neck) / 1e9 == pytest.approx(554.86, rel=0.02)
    assert (dense + neck) / 1e9 == pytest.approx(555.12, abs=0.01)


def test_backbone_flops_dispatches_on_the_type():
    """backbone_flops is the FLOPs function of the backbone's type."""
    from mmdyt.models import DyTSwinTransformer
    from mmdyt.models.flops import backbone_flops, dyt_swin_flops
    vit = DyTViT(arch='tiny', img_size=32)
    assert backbone_flops(vit, (32, 32)) == dyt_vit_flops(vit, (32, 32))
    swin = DyTSwinTransformer(embed_dims=32, depths=(2, 2), num_heads=(1, 2),
                              out_indices=(0, 1))
    assert backbone_flops(swin, (64, 64)) == dyt_swin_flops(swin, (64, 64))
    with pytest.raises(TypeError, match='no FLOPs model for Linear'):
        backbone_flops(torch.nn.Linear(2, 2), (32, 32))
