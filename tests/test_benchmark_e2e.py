"""benchmark_test_step.py: the config's whole test step per sample, on tiny
models (the wiring and the row's arithmetic; no timing assertions)."""
import json

import pytest
import torch
from mmengine.config import Config

from mmdyt_tools.benchmark.test_step import e2e_sample
from helpers import (config_path, load_tool, shrink_seg_recipe,
                     write_video_config)


def run_benchmark(*args):
    return load_tool('analysis_tools/benchmark_test_step.py').main(
        ['--warmup', '0', '--repeats', '2', '--threads', '1', *args])


@pytest.fixture(scope='module')
def tiny_ade20k(tmp_path_factory):
    """The ADE20K recipe, tiny: 32 x 32 crops, its test Resize to 32 on the
    short side."""
    cfg = Config.fromfile(config_path('ade20k/dyt_vitb.py'))
    shrink_seg_recipe(cfg, size=32)
    resize, = (s for s in cfg.test_dataloader.dataset.pipeline
               if s.type == 'Resize')
    resize.scale = (128, 32)
    path = str(tmp_path_factory.mktemp('cfg') / 'ade_tiny.py')
    cfg.dump(path)
    return path


def test_e2e_segmentor_sliding_window(tiny_ade20k, tmp_path):
    out = str(tmp_path / 'e2e.json')
    # 16 x 40 before the pipeline: Resize makes it 32 x 80, 4 crops
    row, = run_benchmark('--config', tiny_ade20k, '--shapes', '16x40',
                         '--precision', 'fp32', 'bf16', '--rate', '0.5',
                         '--json', out)
    assert [row] == json.load(open(out))
    assert (row['shape'], row['input_shape'], row['crops']) == \
        ('16x40', '32x80', 4)
    variants = {'dyt', 'adapter', 'dense', 'dyt_crop1', 'adapter_crop1',
                'dense_crop1', 'dense_again'}
    variants |= {f'{v}_bf16' for v in variants - {'dense_again'}}
    assert {k[:-3] for k in row if k.endswith('_ms')} == variants
    for name in variants:
        assert row[f'{name}_img_s'] == pytest.approx(
            1e3 / row[f'{name}_ms'], rel=0.01)
    ratios = {
        'dyt_vs_adapter': ('adapter', 'dyt'),
        'dyt_vs_dense_crop1_bf16': ('dense_crop1_bf16', 'dyt_crop1_bf16'),
        'dyt_batched_vs_crop1': ('dyt_crop1', 'dyt'),
        'adapter_batched_vs_crop1_bf16': ('adapter_crop1_bf16',
                                          'adapter_bf16'),
        'dense_bf16_gain': ('dense', 'dense_bf16'),
        'noise_control': ('dense_again', 'dense'),
    }
    for key, (num, den) in ratios.items():
        assert row[key] == pytest.approx(
            row[f'{num}_ms'] / row[f'{den}_ms'], rel=0.02), key
        low, high = row[f'{key}_ci']
        assert low <= row[key] <= high
    # the rate was set on one crop; the image's crops are about there
    assert row['rate'] == pytest.approx(0.5, abs=0.1)
    # the whole model per image: 4 crops of backbone + neck + head
    assert row['dense_gflops'] < row['adapter_gflops']
    assert row['dyt_gflops'] < row['adapter_gflops']
    assert row['flops_dyt_vs_adapter'] == pytest.approx(
        row['adapter_gflops'] / row['dyt_gflops'], rel=1e-3)


def test_e2e_sample_is_the_recipes_test_input(tiny_ade20k):
    cfg = Config.fromfile(tiny_ade20k)
    data = e2e_sample(cfg, 'segmentor', (20, 50))
    image, = data['inputs']
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 80)
    meta = data['data_samples'][0].metainfo
    assert meta['ori_shape'] == (20, 50) and meta['img_shape'] == (32, 80)


def test_e2e_recognizer_counts_every_view(tmp_path):
    config = write_video_config(str(tmp_path))
    row, = run_benchmark('--config', config, '--shapes', '32x32',
                         '--models', 'dyt', 'adapter')
    assert row['crops'] is None
    assert {k[:-3] for k in row if k.endswith('_ms')} == {'dyt', 'adapter'}
    assert 'noise_control' not in row  # no dense twin timed
    # one view of 3 frames per clip in this config
    assert row['dyt_gflops'] < row['adapter_gflops']


def test_e2e_needs_a_config():
    with pytest.raises(SystemExit):
        load_tool('analysis_tools/benchmark_test_step.py').main([])


@pytest.mark.parametrize('shapes', [['512'], ['axb'], ['0x16']])
def test_e2e_bad_shapes_are_refused(tiny_ade20k, shapes, capsys):
    with pytest.raises(SystemExit):
        run_benchmark('--config', tiny_ade20k, '--shapes', *shapes)
    assert '--shapes take HxW' in capsys.readouterr().err
