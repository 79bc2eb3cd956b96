"""Mixed precision: bfloat16 autocast on CPUs, training and inference."""
import os.path as osp

import pytest
import torch

from helpers import REPO_ROOT, run_tool_here, seg_demo_env, work_dir_log
from mmdyt.engine import AutocastOptimWrapper
from mmdyt.models import DyTViT, TokenDispatcher
from mmdyt.utils.torch_compat import autocast_enabled

BF16 = dict(device_type='cpu', dtype=torch.bfloat16)


def _record_scores(model):
    """Keep every dispatcher's logits of the next forwards in a list."""
    scores = []
    for dispatcher in model.dispatchers():
        score = dispatcher.score
        dispatcher.score = lambda x, score=score: scores.append(
            score(x)) or scores[-1]
    return scores


@pytest.mark.parametrize('dispatch', ['mlp', 'attn', 'attn_mlp', 'layer'])
def test_gathered_path_under_autocast(dispatch):
    """bfloat16 takes float32's decisions, except for tokens whose float32
    logit is within bfloat16's rounding of the threshold; with the same
    decisions the outputs agree to bfloat16 precision."""
    model = DyTViT(arch='tiny', img_size=32, dispatch=dispatch,
                   out_type='raw').eval()
    scores = _record_scores(model)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)[0]
        masks = [m.clone() for m in model.dispatch_masks]
        logits = list(scores)
        with torch.autocast(**BF16):
            out = model(x)[0]
    assert out.dtype == torch.float32  # the residual stream stays float32
    flips = 0
    for want, got, logit in zip(masks, model.dispatch_masks, logits):
        differ = want != got
        logit = logit[:, -want.shape[1]:]  # prefix tokens are not scored
        assert (logit[differ].abs() < 1e-2).all(), logit[differ]
        flips += int(differ.sum())
    if not flips:  # a flipped token legitimately changes the output
        error = (out - reference).abs().max() / reference.abs().max()
        assert error < 2e-2  # bfloat16: 8 bits of mantissa


@pytest.mark.parametrize('dispatch', ['mlp', 'attn', 'attn_mlp', 'layer'])
def test_a_block_alone_keeps_its_residual_stream_float32(dispatch):
    from mmdyt.models import DyTBlock
    block = DyTBlock(32, 2, dispatch=dispatch).eval()
    x = torch.randn(3, 5, 32)
    with torch.no_grad(), torch.autocast(**BF16):
        out, masks = block(x)  # gathered path: index_add of one dtype
    assert out.dtype == torch.float32 and masks


def test_moe_adapter_under_autocast():
    """The MoE-adapter's per-sample merged weights under bf16 autocast: the
    forward runs (einsum, baddbmm of one dtype), stays close to float32,
    and its gradients reach the experts and the router."""
    from mmdyt.models import MoEAdapter
    adapter = MoEAdapter(32, num_experts=4, bottleneck=8, dropout=0.)
    with torch.no_grad():
        for param in adapter.parameters():
            param.normal_(0, 0.2)
    x = torch.randn(3, 10, 32)
    reference = adapter(x)
    with torch.autocast(**BF16):
        out = adapter(x)
    assert out.dtype == torch.bfloat16
    error = (out.float() - reference).abs().max() / reference.abs().max()
    assert error < 3e-2
    out.float().square().sum().backward()
    for name, param in adapter.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # in a whole model, the residual stream stays float32
    model = DyTViT(arch='tiny', img_size=32, out_type='raw',
                   adapter_cfg=dict(type='MoEAdapter', bottleneck=8)).eval()
    with torch.no_grad(), torch.autocast(**BF16):
        assert model(torch.randn(2, 3, 32, 32))[0].dtype == torch.float32


def test_training_under_autocast_reaches_the_dispatchers():
    model = DyTViT(arch='tiny', img_size=32, out_type='raw').train()
    with torch.autocast(**BF16):
        out = model(torch.randn(2, 3, 32, 32))[0]
        rate = torch.stack([m.mean() for m in model.dispatch_masks]).mean()
    (out.float().square().mean() + rate).backward()
    dispatcher = model.dispatchers()[0].linear
    assert dispatcher.weight.grad is not None
    assert dispatcher.weight.grad.abs().sum() > 0


def test_dispatcher_scores_in_float32_under_autocast():
    x = torch.randn(2, 5, 8)
    with torch.autocast(**BF16):
        assert TokenDispatcher(8).score(x).dtype == torch.float32
        assert TokenDispatcher(8, float32_scores=False).score(
            x).dtype == torch.bfloat16


def test_autocast_optim_wrapper():
    model = torch.nn.Linear(4, 4)
    wrapper = AutocastOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        assert autocast_enabled('cpu')
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16
    assert not autocast_enabled('cpu')
    with pytest.raises(ValueError, match="for float16 use mmengine's "
                       'AmpOptimWrapper'):
        AutocastOptimWrapper(
            dtype='float16',
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_amp_training_and_testing_with_the_demo_config(tmp_path):
    options = {
        **seg_demo_env(tmp_path, training=4, validation=4),
        'train_dataloader.batch_size': 2,
        'train_cfg.max_iters': 2,
        'default_hooks.logger.interval': 1,
    }
    config = osp.join(REPO_ROOT, 'configs/demo/seg_demo.py')
    run_tool_here('train.py', config, '--amp', '--no-validate',
                  '--work-dir', str(tmp_path / 'work'), options=options)
    log = work_dir_log(tmp_path / 'work')
    assert "dtype='bfloat16'" in log  # no GPU: bfloat16 autocast
    assert "type='AutocastOptimWrapper'" in log
    assert 'Iter(train) [2/2]' in log and 'loss: nan' not in log
    checkpoint = str(tmp_path / 'work' / 'iter_2.pth')
    fp32 = run_tool_here('test.py', config, checkpoint, '--work-dir',
                         str(tmp_path / 'fp32'), options=options)
    bf16 = run_tool_here('test.py', config, checkpoint, '--amp',
                         '--work-dir', str(tmp_path / 'bf16'),
                         options=options)
    assert "test_cfg = dict(fp16=True, type='TestLoop')" in work_dir_log(
        tmp_path / 'bf16')
    assert abs(bf16['act_rate'] - fp32['act_rate']) < 0.01
    assert abs(bf16['aAcc'] - fp32['aAcc']) < 1.0
    # amp_agreement.py: the same two evaluations as test.py's, side by side
    result = run_tool_here('analysis_tools/amp_agreement.py', config,
                           checkpoint, options=options)
    for got, want in ((result['metrics_fp32'], fp32),
                      (result['metrics_amp'], bf16)):
        assert got['mIoU'] == pytest.approx(want['mIoU'], abs=0.01)
    assert result['rate_fp32'] == pytest.approx(fp32['act_rate'], abs=1e-3)
    assert 0 <= result['decisions_differ'] < 0.05 * result['decisions']
    assert result['pixels_agree'] > 0.9
