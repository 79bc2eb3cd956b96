"""DyTSwinTransformer: mmseg's Swin with DyT at every FFN. Equal to mmseg's
SwinTransformer on the same weights (complete path, adapters at init),
gathered evaluation equal to the masked formulation, the FLOPs model
against mmengine's counter and Table 17, the recipe's training step."""
import pytest
import torch
from mmengine.config import Config

from helpers import config_path
from mmdyt.models import DyTSwinTransformer
from mmdyt.models.flops import dyt_swin_flops
from mmdyt_tools.twins import randomize_adapters

#: A small Swin: four stages, 2 blocks each, window 7.
TINY_SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                 window_size=7, drop_path_rate=0.)
#: Swin-B at 224 with window 7, as the paper's Table 17 counts it.
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
              window_size=7)


def swin_pair(**kwargs):
    """mmseg's Swin (random weights) and a DyT Swin holding them."""
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    reference = SwinTransformer(**TINY_SWIN)
    reference.init_weights()
    model = DyTSwinTransformer(**TINY_SWIN, **kwargs)
    model.init_weights()
    missing, unexpected = model.load_state_dict(reference.state_dict(),
                                                strict=False)
    assert not unexpected
    assert all('_dispatcher.' in k or '_adapter.' in k for k in missing)
    reference.eval()  # (mmseg's Swin.train returns None)
    return reference, model.eval()


@pytest.mark.parametrize('size', [(512, 512), (97, 131)])  # 97x131: padding
def test_complete_path_and_fresh_adapters_equal_mmseg_swin(size):
    reference, model = swin_pair()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference(x)
        complete = model(x, complete=True)
        with torch.no_grad():  # every token active: the dynamic path too
            for dispatcher in model.dispatchers():
                dispatcher.linear.bias.fill_(1e4)
        dynamic = model(x)
    assert len(expected) == 4
    for want, got, dyn in zip(expected, complete, dynamic):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        torch.testing.assert_close(dyn, want, atol=1e-4, rtol=0)
    assert model.activation_rate() == 1.0


def test_gathered_evaluation_equals_masked():
    _, model = swin_pair(adapter_cfg=dict(type='Adapter', bottleneck=8,
                                          dropout=0.))
    randomize_adapters(model)
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        gathered = model(x)
    masks = list(model.dispatch_masks)
    assert [m.shape[1] for m in masks] == [825, 825, 221, 221, 63, 63, 20,
                                           20]  # each stage's token grid
    assert 0.2 < model.activation_rate() < 0.8
    # the training formulation (mask times a dense FFN), on the same masks
    for dispatcher, mask in zip(model.dispatchers(), masks):
        dispatcher.forward = lambda tokens, mask=mask: mask
    model.train()
    with torch.no_grad():
        masked = model(x)
    for a, b in zip(gathered, masked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_training_gives_masks_with_gradients_for_the_rate_loss():
    from mmdyt.models import DyTLoss
    _, model = swin_pair()
    model.train()
    outs, masks = model.forward_with_masks(torch.randn(2, 3, 64, 64))
    loss = DyTLoss(target_rate=0.3).rate_losses(masks)['loss_rate']
    loss.backward()
    grads = [d.linear.weight.grad for d in model.dispatchers()]
    assert len(grads) == 8 and all(g is not None and g.abs().sum() > 0
                                   for g in grads)
    frozen = [p for n, p in model.named_parameters()
              if '_adapter' not in n and '_dispatcher' not in n]
    assert frozen and not any(p.requires_grad for p in frozen)


def test_flops_model_equals_mmengine_counter():
    from mmdyt_tools.flops import count_flops  # mmengine's, with mmdyt's ops
    _, model = swin_pair(dispatch=None)  # every token computed
    x = torch.randn(1, 3, 98, 126)
    assert dyt_swin_flops(model, (98, 126)).total == pytest.approx(
        count_flops(model, x), rel=1e-6)


def test_swin_b_table_17_flops_and_trainable_parameters():
    model = DyTSwinTransformer(**SWIN_B, out_indices=(3, ))
    dense = dyt_swin_flops(model, (224, 224), with_dyt=False).total / 1e9
    assert dense == pytest.approx(15.40, rel=0.01)  # Table 17's full model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable / 1e6 == pytest.approx(1.55, rel=0.02)  # Table 17
    # the rate scales the FFNs and their norms only; an FFN costs the same
    # in every stage (tokens / 4 where channels double): 411 MFLOPs
    ffn = 24 * 3136 * 128 * 2 * 512
    norms = sum(depth * 3136 // 4**i * 128 * 2**i * 5
                for i, depth in enumerate((2, 2, 18, 2)))
    all_tokens = dyt_swin_flops(model, (224, 224)).total
    rate_half = dyt_swin_flops(model, (224, 224), [0.5] * 24).total
    assert all_tokens - rate_half == pytest.approx(0.5 * (ffn + norms),
                                                   rel=1e-9)
    assert round(rate_half / 1e9, 2) == 10.93  # docs/en/benchmarks/flops.md


def test_unsupported_dispatch_is_refused():
    with pytest.raises(ValueError, match='FFN'):
        DyTSwinTransformer(**TINY_SWIN, dispatch='attn')


def test_ade20k_recipe_trains_a_step_with_the_rate_loss():
    """configs/ade20k/dyt_swinb_upernet.py with a small Swin (its structure
    otherwise kept): one training step at 512x512 logs loss_rate, and the
    test step records each image's activation rate."""
    from mmengine.optim import OptimWrapper
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmdyt_tools.inputs import init_task_model
    cfg = Config.fromfile(config_path('ade20k/dyt_swinb_upernet.py'))
    cfg.model.backbone.update(init_cfg=None, **TINY_SWIN)
    cfg.model.decode_head.update(in_channels=[32, 64, 128, 256],
                                 channels=16)
    cfg.model.auxiliary_head.update(in_channels=128, channels=8)
    model = init_task_model(cfg)
    samples = []
    for _ in range(2):  # two images: the heads' BatchNorms need a batch
        sample = SegDataSample(metainfo=dict(img_shape=(512, 512),
                                             ori_shape=(512, 512),
                                             pad_shape=(512, 512)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 150, (1, 512, 512)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 512, 512),
                                      dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    optim = OptimWrapper(torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3))
    model.train()
    log_vars = model.train_step(data, optim)
    assert {'loss_rate', 'act_rate', 'decode.loss_ce'} <= set(log_vars)
    model.eval()
    with torch.no_grad():
        prediction = model.test_step(data)[0]
    assert 0 < prediction.metainfo['act_rate'] < 1


def test_coco_recipe_trains_a_step_and_predicts_with_rates():
    """configs/coco/dyt_swinb_mask-rcnn_1x.py with a small Swin: Mask R-CNN's
    losses plus loss_rate, gradients at every dispatcher, a prediction
    carrying its activation rate."""
    from test_detection import build_detector, det_batch
    cfg = Config.fromfile(config_path('coco/dyt_swinb_mask-rcnn_1x.py'))
    cfg.model.backbone.update(init_cfg=None, **TINY_SWIN)
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    model = build_detector(cfg).train()
    data = model.data_preprocessor(det_batch((128, 128), 80), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_rate', 'loss_mask', 'loss_rpn_cls'} <= set(losses)
    losses['loss_rate'].backward()
    assert all(d.linear.weight.grad is not None
               for d in model.backbone.dispatchers())
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(det_batch((128, 128), 80), False)
        sample = model.predict(data['inputs'], data['data_samples'])[0]
    assert 0 < sample.metainfo['act_rate'] < 1


def test_benchmark_peers_compute_what_dyt_computes():
    """benchmark_backbone.py --preset swin-b-512's reference gather equals
    DyT's gathered evaluation; the ideal slice runs DyT's token counts."""
    from mmdyt_tools.benchmark.swin_peers import (SwinIdealSlice,
                                                  SwinReferenceGather)
    _, model = swin_pair()
    randomize_adapters(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got = model(x)
        reference = SwinReferenceGather(model)(x)
        ideal = SwinIdealSlice(model)
        ideal.set_active(model.dispatch_masks)
        sliced = ideal(x)
    for a, b, c in zip(got, reference, sliced):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert c.shape == a.shape
    assert ideal.active == [int(m.sum()) for m in model.dispatch_masks]


def test_rate_meter_threshold_and_flops_work_for_swin():
    from mmdyt.engine import RateMeter
    _, model = swin_pair()
    x = torch.randn(2, 3, 64, 96)
    with RateMeter(model) as meter, torch.no_grad():
        model(x)
    rates = meter.rates
    assert len(rates) == 8 and meter.num_images == 2
    assert sum(rates) / 8 == pytest.approx(model.activation_rate())
    assert meter.flops() == pytest.approx(
        2 * dyt_swin_flops(model, (64, 96), rates).total)
    model.set_dispatch_threshold(0.9)  # the cost knob: fewer tokens
    with torch.no_grad():
        model(x)
    assert model.activation_rate() < sum(rates) / 8
