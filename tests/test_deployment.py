"""Deployment: DyT models exported to ONNX with real token skipping
(tools/deployment/pytorch2onnx.py), run by ONNX Runtime and OpenVINO, and
evaluated and used through the libraries' own pre- and post-processing
(test_onnx.py, onnx_infer.py); their speed beside PyTorch's
(benchmark_runtimes.py)."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config

from helpers import (cfg_options, config_path, load_tool, make_video,
                     requires_torch_for, save_model, seg_demo_env,
                     write_seg_config, write_video_config)
from mmdyt.utils.torch_compat import ONNX_DYNAMIC_BATCH, ONNX_EXPORT
from mmdyt_tools.twins import randomize_adapters

pytestmark = requires_torch_for(ONNX_EXPORT)

RUNTIMES = ('ort', 'openvino')


def export(config, checkpoint, out, *args, options=None):
    import pytorch2onnx
    pytorch2onnx.main([config, checkpoint, '--out', out, *args,
                       *cfg_options(options)])
    return out


def tiny_seg(tmp_path, name='tiny'):
    """A tiny DyT segmentor config and a checkpoint of its random model."""
    from mmdyt_tools.inputs import init_task_model, load_config
    config = write_seg_config(str(tmp_path))
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = init_task_model(cfg)
    randomize_adapters(model)  # adapters start at zero: make them compute
    return config, cfg, model, save_model(model, str(tmp_path / f'{name}'
                                                     '.pth'))


def torch_outputs(cfg, checkpoint, inputs, variant='dyt', with_rate=False):
    from mmdyt_tools.inputs import init_task_model
    from mmdyt_tools.deploy.onnx_export import TensorModel, task_of, variant_of
    cfg = Config(cfg.to_dict())
    cfg.model.backbone.init_cfg = None
    model = variant_of(cfg, init_task_model(cfg, checkpoint), variant)
    with torch.no_grad():
        out = TensorModel(model, task_of(cfg), with_rate)(inputs)
    return [o.numpy() for o in out]


def run_both(path, inputs):
    from mmdyt_tools.deploy.onnx_runtime import ExportedModel
    return {rt: ExportedModel(path, rt)(inputs.numpy()) for rt in RUNTIMES}


def assert_runtimes_match(path, cfg, checkpoint, inputs, **kwargs):
    expected = torch_outputs(cfg, checkpoint, inputs, **kwargs)
    for runtime, outputs in run_both(path, inputs).items():
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert got.shape == want.shape, runtime
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0,
                                       err_msg=runtime)
    return expected


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The segmentation demo's model (random weights) and data, exported
    with its rate output."""
    from mmdyt_tools.inputs import init_task_model
    root = tmp_path_factory.mktemp('deploy_demo')
    options = seg_demo_env(root, training=1, validation=4)
    cfg = Config.fromfile(config_path('demo/seg_demo.py'))
    cfg.merge_from_dict(options)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    checkpoint = save_model(init_task_model(cfg), str(root / 'demo.pth'))
    onnx_file = export(config_path('demo/seg_demo.py'), checkpoint,
                       str(root / 'dyt.onnx'), '--with-rate',
                       options=options)
    return dict(cfg=cfg, checkpoint=checkpoint, onnx=onnx_file,
                options=options, root=root)


def test_demo_segmentor_export_skips_tokens_in_both_runtimes(demo):
    from mmdyt_tools.deploy.onnx_export import graph_op_counts
    inputs = torch.randn(1, 3, 96, 96)
    logits, rates = assert_runtimes_match(
        demo['onnx'], demo['cfg'], demo['checkpoint'], inputs,
        with_rate=True)
    assert logits.shape == (1, 5, 48, 48)  # UPerHead at 1/2 resolution
    assert rates.shape == (1, 6) and 0.2 < rates.mean() < 0.8
    ops = graph_op_counts(demo['onnx'])
    assert ops['NonZero'] == 6  # one gather of active tokens per block


def test_openvino_bfloat16_runs_the_export(demo):
    """OpenVINO at bfloat16 inference precision computes the export's
    float32 outputs to bfloat16's rounding; ONNX Runtime has no such
    setting."""
    from mmdyt_tools.deploy.onnx_runtime import ExportedModel
    inputs = torch.randn(1, 3, 96, 96)
    want, want_rates = torch_outputs(demo['cfg'], demo['checkpoint'],
                                     inputs, with_rate=True)
    got, rates = ExportedModel(demo['onnx'], 'openvino',
                               precision='bf16')(inputs.numpy())
    assert got.dtype == np.float32
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05
    assert abs(rates.mean() - want_rates.mean()) < 0.02
    with pytest.raises(ValueError, match="'f32' for ONNX Runtime"):
        ExportedModel(demo['onnx'], 'ort', precision='bf16')


@pytest.mark.parametrize('bias, rate', [(1e4, 1.0), (-1e4, 0.0)])
def test_every_or_no_dispatched_token_active(tmp_path, bias, rate):
    config, cfg, model, _ = tiny_seg(tmp_path)
    with torch.no_grad():
        for dispatcher in model.backbone.dispatchers():
            dispatcher.linear.bias.fill_(bias)
    checkpoint = save_model(model, str(tmp_path / 'fixed.pth'))
    inputs = torch.randn(2, 3, 64, 64)
    path = export(config, checkpoint, str(tmp_path / 'fixed.onnx'),
                  '--with-rate', '--batch', '2')
    _, rates = assert_runtimes_match(path, cfg, checkpoint, inputs,
                                     with_rate=True)
    np.testing.assert_array_equal(rates, np.full((2, 4), rate))


@pytest.mark.parametrize('variant', ['adapter', 'dense'])
def test_twins_export_without_a_gather(tmp_path, variant):
    from mmdyt_tools.deploy.onnx_export import graph_op_counts
    config, cfg, _, checkpoint = tiny_seg(tmp_path)
    path = export(config, checkpoint, str(tmp_path / f'{variant}.onnx'),
                  '--variant', variant)
    inputs = torch.randn(1, 3, 64, 64)
    assert_runtimes_match(path, cfg, checkpoint, inputs, variant=variant)
    assert 'NonZero' not in graph_op_counts(path)
    # the dense twin is the pre-trained ViT: it differs from adapter-only
    adapter = torch_outputs(cfg, checkpoint, inputs, variant='adapter')[0]
    dense = torch_outputs(cfg, checkpoint, inputs, variant='dense')[0]
    assert np.abs(adapter - dense).max() > 1e-4


def test_rate_output_needs_dispatchers(tmp_path):
    config, _, _, checkpoint = tiny_seg(tmp_path)
    with pytest.raises(ValueError, match='no token'):
        export(config, checkpoint, str(tmp_path / 'x.onnx'), '--with-rate',
               '--variant', 'adapter')


def test_wrong_input_shape_or_dtype_names_the_expected_shape(demo, tmp_path):
    from mmdyt_tools.deploy.onnx_runtime import ExportedModel
    for runtime in RUNTIMES:
        model = ExportedModel(demo['onnx'], runtime)
        with pytest.raises(ValueError, match=r'\(1, 3, 96, 96\)'):
            model(np.zeros((1, 3, 64, 96), np.float32))
        with pytest.raises(ValueError, match='float32'):
            model(np.zeros((1, 3, 96, 96), np.float64))
        with pytest.raises(ValueError, match=r'\(1, 3, 96, 96\).*'
                           'dynamic-batch'):
            model(np.zeros((2, 3, 96, 96), np.float32))


@requires_torch_for(ONNX_DYNAMIC_BATCH)
def test_dynamic_batch_export(tmp_path):
    from mmdyt_tools.deploy.onnx_runtime import ExportedModel
    config, cfg, _, checkpoint = tiny_seg(tmp_path)
    path = export(config, checkpoint, str(tmp_path / 'dyn.onnx'),
                  '--dynamic-batch')
    for batch in (1, 3):
        inputs = torch.randn(batch, 3, 64, 64)
        assert_runtimes_match(path, cfg, checkpoint, inputs)
    with pytest.raises(ValueError, match=r'\(B, 3, 64, 64\)'):
        ExportedModel(path)(np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_onnx_miou_equals_pytorch(demo, runtime):
    import test_onnx
    results = test_onnx.main([demo['onnx'], '--runtime', runtime,
                              '--checkpoint', demo['checkpoint']])
    onnx_metrics, torch_metrics = results['onnx'], results['pytorch']
    assert set(onnx_metrics) >= {'mIoU', 'aAcc'}
    for key, value in torch_metrics.items():
        assert abs(onnx_metrics[key] - value) <= 0.01, key


def test_onnx_infer_writes_the_predictions(demo, tmp_path):
    import onnx_infer
    from mmseg.apis import inference_model, init_model
    images = sorted(
        osp.join(demo['root'], 'seg', 'images', 'validation', name)
        for name in ('demo_validation_00000.jpg',
                     'demo_validation_00001.jpg'))
    out_dir = str(tmp_path / 'vis')
    written = onnx_infer.main([demo['onnx'], *images, '--out-dir', out_dir])
    assert len(written) == 2
    model = init_model(demo['cfg'], demo['checkpoint'], device='cpu')
    for image, drawing in zip(images, written):
        assert mmcv.imread(drawing).shape[:2] == (96, 96)
        labels = mmcv.imread(drawing.replace('.png', '_label.png'),
                             flag='unchanged')
        expected = inference_model(model, image).pred_sem_seg.data[0]
        assert (labels == expected.numpy()).mean() > 0.999


def test_recognizer_export_and_video_inference(tmp_path):
    import onnx_infer
    from mmaction.apis import inference_recognizer, init_recognizer
    from mmdyt_tools.inputs import init_task_model, load_config
    from mmdyt_tools.deploy.onnx_export import graph_op_counts
    config = write_video_config(str(tmp_path))
    cfg = load_config(config)
    torch.manual_seed(0)
    checkpoint = save_model(init_task_model(cfg), str(tmp_path / 'v.pth'))
    path = export(config, checkpoint, str(tmp_path / 'video.onnx'),
                  '--with-rate')
    inputs = torch.randn(1, 3, 3, 32, 32)  # (B, C, T, H, W)
    scores, rates = assert_runtimes_match(path, cfg, checkpoint, inputs,
                                          with_rate=True)
    assert scores.shape == (1, 4) and rates.shape == (1, 4)
    assert graph_op_counts(path)['NonZero'] == 4
    video = make_video(str(tmp_path / 'clip.mp4'), num_frames=12, size=32)
    got = onnx_infer.main([path, video, '--runtime', 'openvino'])[0]
    model = init_recognizer(cfg, checkpoint, device='cpu')
    expected = inference_recognizer(model, video).pred_score.reshape(-1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize('bias', [0.0, -1e4])
def test_detector_backbone_and_neck_export(tmp_path, bias):
    """ViTDet has no cls token: with bias -1e4 no token of any block is
    active (an empty gather), which the runtimes must run too."""
    from mmdyt_tools.inputs import init_task_model, load_config
    config = config_path('demo/det_demo.py')
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = init_task_model(cfg)
    with torch.no_grad():
        for dispatcher in model.backbone.dispatchers():
            dispatcher.linear.bias.fill_(bias)
    checkpoint = save_model(model, str(tmp_path / 'det.pth'))
    path = export(config, checkpoint, str(tmp_path / 'det.onnx'),
                  '--with-rate')
    inputs = torch.randn(1, 3, 128, 128)
    outputs = assert_runtimes_match(path, cfg, checkpoint, inputs,
                                    with_rate=True)
    assert [o.shape[-1] for o in outputs[:-1]] == [64, 32, 16, 8, 4]
    rates = outputs[-1]
    if bias:
        np.testing.assert_array_equal(rates, 0)
    else:
        assert 0 < rates.mean() < 1


def test_swin_export_skips_tokens_in_both_runtimes(tmp_path):
    """A DyTSwinTransformer segmentor (the Swin demo config cut to two
    stages of one block, random weights) at an odd size (patches, windows
    and patch merging padded): both runtimes compute PyTorch's logits and
    rates, with a gather per block."""
    from mmdyt_tools.inputs import init_task_model
    from mmdyt_tools.deploy.onnx_export import graph_op_counts
    cfg = Config.fromfile(config_path('demo/seg_demo_swin.py'))
    cfg.model.backbone.update(depths=(1, 1), num_heads=(1, 2),
                              out_indices=(0, 1), init_cfg=None)
    cfg.model.decode_head.update(in_channels=[32, 64], in_index=[0, 1])
    cfg.model.auxiliary_head.update(in_channels=64, in_index=1)
    config = str(tmp_path / 'swin.py')
    cfg.dump(config)
    torch.manual_seed(0)
    model = init_task_model(cfg)
    randomize_adapters(model)
    checkpoint = save_model(model, str(tmp_path / 'swin.pth'))
    path = export(config, checkpoint, str(tmp_path / 'swin.onnx'),
                  '--with-rate', '--shape', '97', '131')
    inputs = torch.randn(1, 3, 97, 131)
    logits, rates = assert_runtimes_match(path, cfg, checkpoint, inputs,
                                          with_rate=True)
    assert logits.shape == (1, 5, 25, 33)  # UPerHead at stride 4
    assert rates.shape == (1, 2) and 0 < rates.mean() < 1
    assert graph_op_counts(path)['NonZero'] == 2


def test_benchmark_runtimes_on_a_tiny_segmentor(tmp_path):
    """benchmark_runtimes.py --config: the three twins exported, checked
    and timed in PyTorch, ONNX Runtime and OpenVINO (also at bfloat16; no
    timing assertions)."""
    config = write_seg_config(str(tmp_path))
    out = str(tmp_path / 'runtimes.json')
    threads = torch.get_num_threads()
    try:
        (row, ) = load_tool('deployment/benchmark_runtimes.py').main([
            '--config', config, '--batch', '2', '--warmup', '0',
            '--repeats', '2', '--threads', '1', '--export-dir',
            str(tmp_path / 'onnx'), '--openvino-bf16', '--json', out])
    finally:
        torch.set_num_threads(threads)
    assert row['setting'] == 'tiny_seg-64x64' and row['batch'] == 2
    assert row['rate'] == pytest.approx(0.5, abs=0.05)
    assert row['runtimes'] == ['torch', 'ort', 'openvino', 'openvino_bf16']
    for runtime in row['runtimes']:
        for twin in ('dense', 'adapter', 'dyt'):
            assert row[f'{runtime}_{twin}_ms'] > 0
        low, high = row[f'{runtime}_speedup_ci']
        assert low <= row[f'{runtime}_speedup'] <= high
    errors = row['output_errors']
    assert max(v for k, v in errors.items() if '_bf16_' not in k) <= 1e-3
    assert 0 < errors['openvino_bf16_dyt'] <= 0.15
    assert row['cpu']
