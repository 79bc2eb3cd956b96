"""tools/analysis_tools: get_flops.py, benchmark_backbone.py,
benchmark_model_forward.py, visualize_dispatch.py and profile_ops.py end to
end on tiny models (no timing assertions: timings belong in
benchmarks)."""
import json
import os
import os.path as osp

import cv2
import pytest
import torch
from mmengine.config import Config

from mmdyt_tools.dispatch_plots import PLOT_DPI, PLOT_SIZE, grid_size
from helpers import (REPO_ROOT, TINY, TINY_12, make_seg_data, make_video,
                     requires_torch_for, save_model, write_seg_config,
                     write_video_config)
from mmdyt.models import DyTViT
from mmdyt.models.flops import dyt_vit_flops
from mmdyt.utils.torch_compat import PROFILER_DTYPES
from mmdyt_tools.benchmark.machine import cpu_model
from mmdyt_tools.benchmark.model_set import MODEL_NAMES
from mmdyt_tools.benchmark.models import build_benchmark_models
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.inputs import init_task_model


def load_tool(name):
    import helpers
    return helpers.load_tool(f'analysis_tools/{name}.py')


def png_size(path):
    image = cv2.imread(path)
    assert image is not None, path
    return image.shape[:2]


# ------------------------------------------------------------- get_flops
def test_get_flops_segmentor_on_its_test_dataset(tmp_path):
    data_root = make_seg_data(str(tmp_path / 'data'), num_images=3)
    config = write_seg_config(str(tmp_path), data_root)
    out = str(tmp_path / 'flops.json')
    result = load_tool('get_flops').main(
        [config, '--num-samples', '3', '--json', out])
    assert result == json.load(open(out))
    assert result['rate_source'] == 'test dataset, 3 samples'
    assert result['input_shape'] == [3, 64, 64]
    assert len(result['rates']) == TINY['num_layers']
    assert 0 < result['mean_rate'] < 1
    backbone = result['backbone']
    assert backbone['dense'] < backbone['complete']
    assert backbone['dyt'] < backbone['complete']
    vit = DyTViT(arch=TINY, img_size=64, patch_size=8)
    assert backbone['dense'] == dyt_vit_flops(vit, (64, 64),
                                              with_dyt=False).total
    parts = result['parts']
    assert set(parts) == {'neck', 'decode_head', 'auxiliary_head'}
    assert result['whole']['dyt'] == pytest.approx(
        backbone['dyt'] + parts['neck'] + parts['decode_head'])
    total, trainable = result['params']['model']
    assert 0 < trainable < total


def test_get_flops_falls_back_to_random_inputs(tmp_path, capsys):
    config = write_seg_config(str(tmp_path))  # its data does not exist
    result = load_tool('get_flops').main(
        [config, '--num-samples', '2', '--shape', '32', '48'])
    assert result['rate_source'] == 'random inputs, 2 samples'
    assert result['input_shape'] == [3, 32, 48]
    assert '| whole model |' in capsys.readouterr().out


def test_get_flops_at_a_given_rate(tmp_path):
    config = write_seg_config(str(tmp_path))
    result = load_tool('get_flops').main([config, '--rate', '0.5'])
    assert result['rates'] == [0.5] * TINY['num_layers']
    assert result['rate_source'].startswith('--rate 0.5')
    vit = DyTViT(arch=TINY, img_size=64, patch_size=8,
                 adapter_cfg=dict(type='Adapter', bottleneck=8))
    assert result['backbone']['dyt'] == dyt_vit_flops(
        vit, (64, 64), [0.5] * 4).total


def test_get_flops_detector_counts_backbone_and_fpn():
    """A detector: backbone + feature pyramid (the paper's Table 11
    convention), the pyramid traced by mmengine's counter."""
    from mmdyt_tools.flops import count_flops
    from mmdyt.models import SimpleFPN
    config = osp.join(osp.dirname(__file__), '..', 'configs', 'demo',
                      'det_demo.py')
    result = load_tool('get_flops').main([config, '--rate', '0.5'])
    assert result['inference_parts'] == ['neck']
    assert list(result['parts']) == ['neck']
    neck = SimpleFPN(backbone_channel=128, out_channels=64).eval()
    assert result['parts']['neck'] == count_flops(
        neck, ((torch.randn(1, 128, 16, 16), ), ))
    for variant in ('dense', 'complete', 'dyt'):
        assert result['whole'][variant] == (result['backbone'][variant] +
                                            result['parts']['neck'])
    assert result['backbone']['dyt'] < result['backbone']['dense']


def test_get_flops_dataset_inputs_raise_without_data(tmp_path):
    config = write_seg_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='no/such/data'):
        load_tool('get_flops').main([config, '--inputs', 'dataset'])


def test_get_flops_video_uses_clip_len_and_a_checkpoint(tmp_path):
    config = write_video_config(str(tmp_path))
    model = init_task_model(Config.fromfile(config))
    with torch.no_grad():  # a trained-looking model: most tokens skipped
        for dispatcher in model.backbone.dispatchers():
            dispatcher.linear.bias.fill_(-50.)
    checkpoint = save_model(model, str(tmp_path / 'video.pth'))
    result = load_tool('get_flops').main(
        [config, '--checkpoint', checkpoint, '--inputs', 'random'])
    assert result['input_shape'] == [3, 3, 32, 32]  # clip_len 3
    assert result['rates'] == [0.] * TINY['num_layers']
    frame = dyt_vit_flops(model.backbone, (32, 32), [0.] * 4).total
    assert result['backbone']['dyt'] == 3 * frame
    assert result['inference_parts'] == ['cls_head']


# ------------------------------------------------------------- benchmark
@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def test_benchmark_rows_and_json(tmp_path, restore_threads):
    out = str(tmp_path / 'bench.json')
    rows = load_tool('benchmark_backbone').main([
        '--arch', 'tiny', '--img-size', '32', '--batch', '1', '2',
        '--warmup', '0', '--repeats', '3', '--threads', '1', '2', '--json',
        out
    ])
    assert [(row['threads'], row['batch']) for row in rows] == [
        (1, 1), (1, 2), (2, 1), (2, 2)]
    assert torch.get_num_threads() == restore_threads  # left as it was
    assert rows == json.load(open(out))
    cpu = cpu_model()
    assert cpu  # e.g. 'AMD EPYC': which CPU the ratios were measured on
    for row in rows:
        assert row['setting'] == 'vit-tiny-32'
        assert row['cpu'] == cpu
        for key in ('rate', 'dense_ms', 'dense_again_ms', 'adapter_ms',
                    'dyt_ms', 'reference_ms', 'ideal_ms', 'speedup',
                    'flops_speedup', 'dyt_vs_reference', 'noise_control',
                    'ideal_speedup', 'dyt_vs_ideal'):
            assert key in row and row[key] > 0, key
        for key in ('speedup', 'efficiency', 'dyt_vs_reference',
                    'adapter_vs_dense', 'noise_control', 'dyt_vs_ideal'):
            low, high = row[f'{key}_ci']
            assert low <= row[key] <= high, key
        assert 0 < row['rate'] < 1
        assert row['flops_speedup'] > 1
        assert row['speedup'] == pytest.approx(
            row['dense_ms'] / row['dyt_ms'], rel=0.01)
        assert row['flops_speedup'] == pytest.approx(
            row['dense_gflops'] / row['dyt_gflops'], rel=0.01)


def test_benchmark_whole_segmentor(tmp_path, restore_threads):
    """--config: the whole segmentor with DyT, adapter-only and dense
    backbones, same weights; FLOPs ratios from the whole-model report."""
    from mmdyt_tools.benchmark.whole_model import build_whole_models
    config = write_seg_config(str(tmp_path))
    out = str(tmp_path / 'whole.json')
    rows = load_tool('benchmark_model_forward').main([
        '--config', config, '--rate', '0.5', '--batch', '2', '--warmup',
        '0', '--repeats', '3', '--threads', '1', '--json', out])
    assert rows == json.load(open(out))
    row, = rows
    assert row['parts'] == 'backbone + neck + decode_head'
    assert row['rate'] == pytest.approx(0.5, abs=0.02)
    assert row['dense_gflops'] < row['adapter_gflops']
    assert row['dyt_gflops'] < row['adapter_gflops']
    assert row['flops_saved'] == pytest.approx(
        1 - row['dyt_gflops'] / row['adapter_gflops'], abs=1e-3)
    low, high = row['dyt_vs_adapter_ci']
    assert low <= row['dyt_vs_adapter'] <= high
    # the twins: one set of weights, three backbones
    models = build_whole_models(Config.fromfile(config))
    inputs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        adapter = models.adapter(inputs, mode='tensor')
        complete_backbone = models.dyt.backbone(inputs, complete=True)
        complete = models.dyt.decode_head(models.dyt.neck(complete_backbone))
        dense = models.dense(inputs, mode='tensor')
    torch.testing.assert_close(adapter, complete, atol=1e-5, rtol=0)
    assert not torch.allclose(dense, adapter)  # adapters removed
    assert all(b.mlp_adapter is None for b in models.dense.backbone.blocks)


def test_benchmark_whole_recognizer(tmp_path, restore_threads):
    """--config with an mmaction2 config: backbone + cls head on one view
    of a clip, the FLOPs per clip."""
    from mmdyt_tools.benchmark.whole_model import build_whole_models
    config = write_video_config(str(tmp_path))
    (row, ) = load_tool('benchmark_model_forward').main([
        '--config', config, '--rate', '0.5', '--batch', '2', '--warmup',
        '0', '--repeats', '2', '--threads', '1'])
    assert row['task'] == 'recognizer'
    assert row['timed'] == 'backbone + cls head'
    assert row['parts'].endswith('cls_head')
    assert row['rate'] == pytest.approx(0.5, abs=0.05)
    assert row['dyt_gflops'] < row['adapter_gflops']
    models = build_whole_models(Config.fromfile(config))
    assert models.num_frames == 3
    inputs, backbone_inputs = models.inputs(2, (32, 32),
                                            torch.Generator().manual_seed(0))
    assert inputs.shape == (2, 1, 3, 3, 32, 32)
    assert backbone_inputs.shape == (2, 3, 3, 32, 32)
    with torch.no_grad():
        scores = models.forwards((32, 32), 2)['dyt'](inputs)
    assert scores.shape[0] == 2  # class scores of each clip


def test_benchmark_whole_detector(restore_threads):
    """--config with an mmdet config: backbone + pyramid + RPN + RoI heads
    timed, backbone + pyramid counted (the paper's convention)."""
    (row, ) = load_tool('benchmark_model_forward').main([
        '--config', osp.join(REPO_ROOT, 'configs/demo/det_demo.py'),
        '--img-size', '64', '--rate', '0.5', '--batch', '1', '--warmup',
        '0', '--repeats', '2', '--threads', '1'])
    assert row['task'] == 'detector'
    assert row['timed'] == 'backbone + neck + RPN + RoI heads'
    assert row['parts'] == 'backbone + neck'
    assert row['rate'] == pytest.approx(0.5, abs=0.05)
    assert row['dense_gflops'] < row['adapter_gflops']
    assert row['dyt_gflops'] < row['adapter_gflops']


def test_benchmark_whole_refuses_other_libraries(tmp_path):
    config = tmp_path / 'other.py'
    config.write_text("default_scope = 'mmpretrain'\nmodel = dict()\n")
    with pytest.raises(ValueError, match='mmseg, mmaction or mmdet'):
        load_tool('benchmark_model_forward').main(['--config', str(config)])


def test_benchmark_target_rate_and_video(tmp_path, restore_threads):
    rows = load_tool('benchmark_backbone').main([
        '--arch', 'tiny', '--img-size', '32', '--num-frames', '2', '--batch',
        '2', '--rate', '0.25', '--warmup', '0', '--repeats', '1', '--timer',
        'cpu', '--threads', '1'
    ])
    (row, ) = rows
    assert row['setting'] == 'vit-tiny-32-video2'
    assert row['rate'] == 0.25  # 2 clips x 2 frames x 4 patches per site
    vit = DyTViT(arch='tiny', img_size=32, final_norm=True)  # as timm's
    assert row['dense_gflops'] == pytest.approx(
        2 * dyt_vit_flops(vit, (32, 32), with_dyt=False).total / 1e9,
        rel=1e-5)


def test_benchmark_presets_parse():
    tool = load_tool('benchmark_backbone')
    setting = tool.resolve_setting(tool.parse_args(['--preset', 'vit-b-512']))
    assert setting['name'] == 'vit-b-512' and setting['batches'] == (1, 2)
    setting = tool.resolve_setting(
        tool.parse_args(['--preset', 'vit-b-video', '--batch', '2']))
    assert setting['num_frames'] == 8 and setting['batches'] == (2, )
    with pytest.raises(SystemExit):
        tool.parse_args(['--rate', '1.5'])


@pytest.fixture(scope='module')
def tiny_models():
    return build_benchmark_models(TINY, 64, patch_size=8)


@pytest.mark.parametrize('rate', [0., 0.3, 1.])
def test_set_activation_rate(rate, tiny_models):
    models = tiny_models
    inputs = torch.randn(1, 3, 64, 64)  # 64 patch tokens
    set_activation_rate(models.dyt, inputs, rate)
    with torch.inference_mode():
        models.dyt(inputs)
    for mask in models.dyt.dispatch_masks:
        assert float(mask.mean()) == pytest.approx(round(rate * 64) / 64)


def test_benchmark_models_share_weights(tiny_models):
    models = tiny_models
    assert list(models.as_dict()) == list(MODEL_NAMES)
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = models.dense(inputs)
        (complete, ) = models.dyt(inputs, complete=True)
        (adapter, ) = models.adapter(inputs)
    # adapters start at zero: all three compute the same function
    torch.testing.assert_close(complete, dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter, dense, atol=1e-5, rtol=0)


def test_reference_gather_computes_what_dyt_computes(tiny_models):
    """The peer is the same DyT model, only gathered the plain way."""
    models = tiny_models
    with torch.no_grad():
        for name, param in models.dyt.named_parameters():
            if '_adapter.up' in name:
                param.normal_(0, 0.1)  # adapters that do something
    inputs = torch.randn(3, 3, 64, 64)
    set_activation_rate(models.dyt, inputs, 0.5)  # the fixture is shared
    with torch.inference_mode():
        (dyt, ), masks = models.dyt.forward_with_masks(inputs)
        reference = models.reference(inputs)
    assert float(torch.stack([m.mean() for m in masks]).mean()) == 0.5
    torch.testing.assert_close(reference, dyt, atol=1e-5, rtol=0)


def _mlp_rows(model, blocks, inputs):
    """The number of tokens each block's MLP computes in one forward."""
    rows = []
    handles = [
        block.mlp.register_forward_hook(
            lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
        for block in blocks
    ]
    with torch.inference_mode():
        model(inputs)
    for handle in handles:
        handle.remove()
    return rows


def test_ideal_slice_computes_as_many_tokens_as_dyt(tiny_models):
    """The ideal peer does DyT's work (per block, the MLP on as many tokens
    as DyT activates) without scoring or gathering."""
    from mmdyt_tools.benchmark.peers import IdealSliceDyT
    models = tiny_models
    ideal = IdealSliceDyT(models.dyt)
    inputs = torch.randn(3, 3, 64, 64)
    with pytest.raises(RuntimeError, match='set_active'):
        ideal(inputs)
    set_activation_rate(models.dyt, inputs, 0.3)
    with torch.inference_mode():
        masks = models.dyt.forward_with_masks(inputs)[1]
    ideal.set_active(masks)
    want = _mlp_rows(models.dyt, models.dyt.blocks, inputs)
    assert want == [round(0.3 * 3 * 64) + 3] * len(masks)  # + cls tokens
    assert _mlp_rows(ideal, models.dyt.blocks, inputs) == want
    assert ideal(inputs).shape == models.dense(inputs).shape
    with pytest.raises(ValueError, match='MLP dispatch'):
        IdealSliceDyT(models.adapter)


def tiny_benchmark_row(*flags):
    """The one row of ``benchmark_backbone.py`` on a tiny ViT at 32²,
    batch 2."""
    (row, ) = load_tool('benchmark_backbone').main([
        '--arch', 'tiny', '--img-size', '32', '--batch', '2', '--rate',
        '0.5', '--warmup', '1', '--repeats', '2', '--threads', '1', *flags
    ])
    return row


def test_benchmark_compiled_peers(tmp_path, restore_threads):
    """--compile adds the compiled dense model and DyT (here with the eager
    backend, which traces like inductor without generating code)."""
    row = tiny_benchmark_row('--compile', '--compile-backend', 'eager')
    for key in ('dense_compiled_ms', 'dyt_compiled_ms', 'compiled_speedup',
                'compiled_efficiency', 'dense_compile_gain',
                'dyt_compile_gain', 'dyt_compiled_vs_dense'):
        assert row[key] > 0, key
    assert row['compiled_speedup'] == pytest.approx(
        row['dense_compiled_ms'] / row['dyt_compiled_ms'], rel=0.01,
        abs=1e-4)  # (ratios are rounded to 4 decimals)
    low, high = row['compiled_speedup_ci']
    assert low <= row['compiled_speedup'] <= high


def test_benchmark_prepacked_peers(restore_threads):
    """--prepack adds the dense model and DyT with pre-packed weights."""
    row = tiny_benchmark_row('--prepack')
    for key in ('dense_prepacked_ms', 'dyt_prepacked_ms', 'prepacked_speedup',
                'prepacked_efficiency', 'dense_prepack_gain',
                'dyt_prepack_gain', 'dyt_prepacked_vs_dense'):
        assert row[key] > 0, key
    assert row['dyt_prepack_gain'] == pytest.approx(
        row['dyt_ms'] / row['dyt_prepacked_ms'], rel=0.01, abs=1e-4)
    assert row['prepacked_efficiency'] == pytest.approx(
        row['prepacked_speedup'] / row['flops_speedup'], abs=1e-3)


def test_benchmark_bf16_peers(restore_threads):
    """--bf16 adds DyT, the dense model and the ideal slice with
    low-precision weights and both models under autocast alone, compares
    DyT with the faster dense peer and names the CPU's bfloat16 units."""
    row = tiny_benchmark_row('--bf16')
    for key in ('dense_bf16_ms', 'dyt_bf16_ms', 'ideal_bf16_ms',
                'dense_bf16_amp_ms', 'dyt_bf16_amp_ms', 'bf16_speedup',
                'bf16_efficiency', 'dense_bf16_gain', 'dyt_bf16_gain',
                'dyt_bf16_vs_dense', 'dyt_bf16_vs_best_dense_bf16',
                'ideal_bf16_vs_best_dense_bf16', 'dyt_bf16_vs_ideal_bf16',
                'dyt_bf16_vs_amp_today', 'dense_bf16_vs_amp_today',
                'dyt_bf16_vs_fp32'):
        assert row[key] > 0, key
    assert row['dense_bf16_gain'] == pytest.approx(
        row['dense_ms'] / row['dense_bf16_ms'], rel=0.01, abs=1e-4)
    # without compiled peers the best dense bf16 peer is the eager one
    assert row['best_dense_bf16'] == 'dense_bf16'
    assert row['dyt_bf16_vs_amp_today'] == pytest.approx(
        row['dyt_bf16_amp_ms'] / row['dyt_bf16_ms'], rel=0.01, abs=1e-4)
    assert row['cpu_bf16'] in ('AMX-BF16', 'AVX512-BF16', 'none')


def test_benchmark_bf16_compiled_peers(restore_threads):
    """--bf16 --compile adds both models compiled in bfloat16; the best
    dense peer is the faster of the eager and the compiled one."""
    row = tiny_benchmark_row('--bf16', '--compile', '--compile-backend',
                             'eager')
    dense = {name: row[f'{name}_ms']
             for name in ('dense_bf16', 'dense_bf16_compiled')}
    assert row['best_dense_bf16'] == min(dense, key=dense.get)
    assert row['dyt_bf16_compiled_vs_best_dense_bf16'] > 0


def test_autocast_peer_runs_in_bfloat16(tiny_models):
    """AutocastPeer runs its model's own weights in bfloat16: the linear
    layers see bfloat16 inputs, and the output is within bfloat16's
    rounding of the float32 output but not equal to it."""
    from mmdyt_tools.benchmark.peers import AutocastPeer
    peer = AutocastPeer(tiny_models.dense)
    assert next(peer.parameters()) is next(tiny_models.dense.parameters())
    seen = []
    hook = tiny_models.dense.vit.blocks[0].mlp.fc1.register_forward_hook(
        lambda module, args, out: seen.append(out.dtype))
    inputs = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want, got = tiny_models.dense(inputs), peer(inputs)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    err = float((want - got.float()).abs().max())
    assert 0 < err < 0.05 * float(want.abs().max())


def test_prepacked_copy_shares_weights_and_dispatch(tiny_models):
    """The pre-packed peers share every parameter with their models (a
    dispatcher bias set on DyT holds for its peer) and compute the same."""
    from mmdyt_tools.benchmark.peers import prepacked_copy

    from mmdyt.models.layers.prepacked_linear import PrepackedLinear
    models = tiny_models
    dyt = prepacked_copy(models.dyt)
    dense = prepacked_copy(models.dense)
    for peer, model in ((dyt, models.dyt), (dense, models.dense)):
        for (name, a), (_, b) in zip(peer.named_parameters(),
                                     model.named_parameters()):
            assert a is b, name
    packed = [m for m in dense.modules() if isinstance(m, PrepackedLinear)]
    assert len(packed) == 4 * len(dense.vit.blocks)
    inputs = torch.randn(2, 3, 64, 64)
    set_activation_rate(models.dyt, inputs, 0.25)
    with torch.inference_mode():
        (want, ), masks = models.dyt.forward_with_masks(inputs)
        (got, ), peer_masks = dyt.forward_with_masks(inputs)
        torch.testing.assert_close(dense(inputs), models.dense(inputs),
                                   atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(peer_masks, masks))
    assert float(torch.cat(peer_masks).float().mean()) == pytest.approx(0.25)
    with pytest.raises(ValueError, match='no ViT block'):
        prepacked_copy(torch.nn.Linear(4, 4))


def test_vitdet_benchmark_models_share_weights_with_timm_sam():
    """The detection preset's models: timm's SAM blocks as the dense peer,
    DyT and the reference gather in windowed and global blocks."""
    models = build_benchmark_models(TINY_12, 96, patch_size=8, vitdet=True)
    assert [b.attn.window_size for b in models.dyt.blocks] == [14, 14, 0] * 4
    with torch.no_grad():
        for name, param in models.dyt.named_parameters():
            if 'rel_pos_' in name:  # dense and DyT read the same tables
                param.normal_(0, 0.2)
        models.dense.sam.load_state_dict({
            k: v for k, v in models.dyt.state_dict().items()
            if 'rel_pos' in k}, strict=False)
    inputs = torch.randn(2, 3, 96, 96)  # a 12x12 grid: no padding to 14
    with torch.no_grad():
        dense = models.dense(inputs)
        (complete, ) = models.dyt(inputs, complete=True)
    torch.testing.assert_close(complete, dense, atol=1e-4, rtol=0)
    set_activation_rate(models.dyt, inputs, 0.5)
    with torch.inference_mode():
        (dyt, ) = models.dyt(inputs)
        reference = models.reference(inputs)
    torch.testing.assert_close(reference, dyt, atol=1e-5, rtol=0)
    tool = load_tool('benchmark_backbone')
    setting = tool.resolve_setting(
        tool.parse_args(['--preset', 'vitdet-b-1024']))
    assert setting['vitdet'] and setting['img_size'] == 1024


def test_bootstrap_ratio_interval():
    from mmdyt_tools.benchmark.stats import bootstrap_ratio
    rng = torch.Generator().manual_seed(0)
    slow = (100 + torch.randn(40, generator=rng)).tolist()
    fast = (50 + torch.randn(40, generator=rng)).tolist()
    value, low, high = bootstrap_ratio(slow, fast)
    assert low < value < high and low > 1.9 and high < 2.1
    value, low, high = bootstrap_ratio(slow, slow[::-1])  # no difference
    assert low <= 1 <= high
    with pytest.raises(ValueError, match='same, non-zero number'):
        bootstrap_ratio([1., 2.], [1.])


# ---------------------------------------------------- visualize_dispatch
def test_visualize_dispatch_image(tmp_path):
    config = write_seg_config(str(tmp_path))
    checkpoint = save_model(
        init_task_model(Config.fromfile(config)), str(tmp_path / 'seg.pth'))
    image = make_seg_data(str(tmp_path / 'data'), 1, size=50)
    image = osp.join(image, 'images', 'validation', '0.jpg')
    out = str(tmp_path / 'vis')
    files = load_tool('visualize_dispatch').main(
        [config, checkpoint, image, '--out', out, '--cols', '2'])
    assert sorted(os.listdir(out)) == sorted(osp.basename(f) for f in files)
    # the test pipeline resizes to 64x64; 4 sites + the count panel
    assert png_size(osp.join(out, '0_dispatch.png')) == grid_size(
        (64, 64), TINY['num_layers'] + 1, 2) == (3 * 82 + 2 * 4, 2 * 64 + 4)
    assert png_size(osp.join(out, '0_rates.png')) == (
        PLOT_SIZE[1] * PLOT_DPI, PLOT_SIZE[0] * PLOT_DPI)
    with open(osp.join(out, '0_rates.json')) as f:
        rates = json.load(f)
    assert rates['input_shape'] == [3, 64, 64]
    assert len(rates['rates']) == TINY['num_layers']


def test_visualize_dispatch_sliding_window_recipe(tmp_path):
    """The ADE20K recipe (tiny, its relative position bias and sliding
    window kept): the maps come from mmseg's inference_model, crop by
    crop."""
    from helpers import config_path, shrink_seg_recipe
    cfg = Config.fromfile(config_path('ade20k/dyt_vitb.py'))
    shrink_seg_recipe(cfg, size=256)  # 256 crops, stride 170
    config = str(tmp_path / 'ade_tiny.py')
    cfg.dump(config)
    checkpoint = save_model(init_task_model(cfg), str(tmp_path / 'm.pth'))
    image = osp.join(make_seg_data(str(tmp_path / 'data'), 1, size=64),
                     'images', 'validation', '0.jpg')
    out = str(tmp_path / 'vis')
    load_tool('visualize_dispatch').main([config, checkpoint, image,
                                          '--out', out])
    # resized to 512x512 by the test pipeline: 3 x 3 crops of 256
    assert png_size(osp.join(out, '0_dispatch.png')) == grid_size(
        (512, 512), 13, 4)
    with open(osp.join(out, '0_rates.json')) as f:
        rates = json.load(f)
    assert rates['input_shape'] == [3, 512, 512]
    assert all(0 < r < 1 for r in rates['rates'])


@pytest.mark.parametrize('source', ['mp4', 'folder'])
def test_visualize_dispatch_video(tmp_path, source):
    config = write_video_config(str(tmp_path))
    checkpoint = save_model(
        init_task_model(Config.fromfile(config)), str(tmp_path / 'video.pth'))
    video = make_video(str(tmp_path / 'clip.mp4'))
    if source == 'folder':
        import mmcv
        video = str(tmp_path / 'clip')
        mmcv.VideoReader(str(tmp_path / 'clip.mp4')).cvt2frames(video)
    out = str(tmp_path / 'vis')
    load_tool('visualize_dispatch').main(
        [config, checkpoint, video, '--out', out, '--num-frames', '2'])
    for t in range(2):
        path = osp.join(out, f'clip_frame{t:03d}_dispatch.png')
        assert png_size(path) == grid_size((32, 32), 5, 4)
    assert not osp.exists(osp.join(out, 'clip_frame002_dispatch.png'))
    rates = json.load(open(osp.join(out, 'clip_rates.json')))
    assert rates['input_shape'] == [3, 2, 32, 32]
    assert all(len(frames) == 2 for frames in rates['frame_rates'])


def test_visualize_dispatch_needs_dispatchers(tmp_path):
    config = write_seg_config(str(tmp_path))
    options = ['model.type=EncoderDecoder', 'model.backbone.dispatch=None']
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(o.split('=') for o in options))
    cfg.model.backbone.dispatch = None
    checkpoint = save_model(init_task_model(cfg),
                            str(tmp_path / 'adapter.pth'))
    with pytest.raises(ValueError, match='no DyT token dispatchers'):
        load_tool('visualize_dispatch').main([
            config, checkpoint, 'x.jpg', '--out',
            str(tmp_path), '--cfg-options', *options
        ])


@requires_torch_for(PROFILER_DTYPES)
def test_profile_ops_casts_and_small_matmuls(restore_threads, capsys):
    """profile_ops.py: under bfloat16 autocast DyT's gathered path converts
    activations as often per block as the adapter-only model (no dtype
    round trip of its own) and fewer elements (only the active tokens reach
    the MLP); the small matmuls' shares and both forms are measured."""
    rows = load_tool('profile_ops').main([
        '--arch', 'tiny', '--img-size', '64', '--batch', '2', '--threads',
        '1', '--repeats', '3'
    ])
    assert '| batch | threads |' in capsys.readouterr().out
    row, = rows
    for kind in ('weight', 'down', 'up'):
        # one activation cast in each direction per matmul input / update;
        # DyT's gathered MLP and its index_add add none
        assert row[f'dyt_bf16_{kind}_casts_per_block'] == pytest.approx(
            row[f'adapter_bf16_{kind}_casts_per_block']), kind
    # the dense block: 4 linear layers (weight and bias), 2 matmul inputs
    # (qkv, fc1; proj and fc2 take bfloat16 already), 2 residual adds; the
    # patch embedding's cast spread over the blocks
    assert row['dense_bf16_weight_casts_per_block'] == pytest.approx(
        8 + 2 / row['depth'])
    assert row['dense_bf16_up_casts_per_block'] == pytest.approx(2, abs=0.1)
    assert (row['dyt_bf16_activation_elements_per_block'] <
            row['adapter_bf16_activation_elements_per_block'])
    for part in ('adapter_down', 'adapter_up', 'dispatcher'):
        assert 0 < row[f'{part}_share'] < 0.5, part
    for key in ('fused_speedup', 'dense_weight_cast_cost',
                'dyt_weight_cast_cost'):
        low, high = row[f'{key}_ci']
        assert 0 < low <= row[key] <= high, key


def test_bfloat16_weights_compute_what_autocast_computes(tiny_models):
    """profile_ops.with_bfloat16_weights: the same outputs under autocast,
    bit for bit (adapters that compute: non-zero up-projections), with the
    dispatchers still scoring in float32."""
    import copy as copy_module

    from mmdyt_tools.benchmark.peers import AutocastPeer
    from mmdyt_tools.twins import randomize_adapters
    with_bf16 = load_tool('profile_ops').with_bfloat16_weights
    inputs = torch.randn(2, 3, 64, 64)
    dyt = copy_module.deepcopy(tiny_models.dyt)
    randomize_adapters(dyt)
    for model in (tiny_models.dense, dyt):
        copy = with_bf16(model)
        with torch.inference_mode():
            want, got = AutocastPeer(model)(inputs), AutocastPeer(copy)(inputs)
        want, got = (want[-1], got[-1]) if isinstance(want, tuple) else (
            want, got)
        assert torch.equal(want, got)
    assert all(d.linear.weight.dtype == torch.float32
               for d in copy.dispatchers())
    assert copy.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16


def test_bf16_peer_check_reads_dyt_decisions(tiny_models, monkeypatch):
    """DyT's bfloat16 peer is checked on its dispatch decisions (tokens at
    the threshold may flip), the other models on their outputs."""
    from mmdyt_tools.benchmark import checks
    inputs = torch.randn(2, 3, 64, 64)
    set_activation_rate(tiny_models.dyt, inputs, 0.5)
    with torch.inference_mode():
        tiny_models.ideal.set_active(
            tiny_models.dyt.forward_with_masks(inputs)[1])
    tiny_models.add_bf16()
    try:
        checks.check_peers(tiny_models, inputs)  # passes
        monkeypatch.setitem(checks.BF16_DECISIONS, 'rate', -1)
        with pytest.raises(RuntimeError, match='decisions'):
            checks.check_peers(tiny_models, inputs)
        monkeypatch.undo()
        monkeypatch.setitem(checks.PEER_TOLERANCE, 'bf16', 1e-6)
        with pytest.raises(RuntimeError, match="dense model's output"):
            checks.check_peers(tiny_models, inputs)
    finally:
        tiny_models.bf16 = {}


def test_benchmark_setting_times_the_swin_models(restore_threads):
    """The swin-b-512 preset's models (here at 64²): Swin's FLOPs, its
    feature maps and per-stage masks go through the checks, and the
    low-precision peers are timed."""
    from mmdyt_tools.benchmark.backbone import benchmark_setting
    torch.set_num_threads(1)
    models = build_benchmark_models(img_size=64, swin=True)
    models.add_bf16()
    row = benchmark_setting(models, 'swin', 1, 64, rate=0.5, warmup=0,
                            repeats=2)
    assert row['dense_gflops'] > row['dyt_gflops'] > 0
    assert row['flops_speedup'] > 1
    assert row['rate'] == pytest.approx(0.5, abs=0.05)
    assert row['dyt_bf16_vs_best_dense_bf16'] > 0
