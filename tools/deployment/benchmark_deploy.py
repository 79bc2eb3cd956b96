"""Speed of DyT in the deployment runtimes: PyTorch eager, ONNX Runtime and
OpenVINO, against its adapter-only and dense twins, in one process.

For each setting the three twins share every weight (random: nothing is
downloaded; DyT's dispatchers are set to ``--rate`` with
``benchmark_models.set_activation_rate``) and each is exported to ONNX
(``onnx_export.py``, DyT with its data-dependent token skipping), then run
by ONNX Runtime and OpenVINO (float32, ``--threads`` threads) beside the
PyTorch eager model: nine models plus the PyTorch dense model timed again
(the noise control), interleaved in a rotating order
(``benchmark_models.time_interleaved``), ratios with 95% bootstrap
intervals. Before timing, every runtime's output is checked against
PyTorch's. Settings:

- ``--preset vit-b-224`` (or another ``benchmark_models.PRESETS`` name):
  the ViT-B/16 backbone alone, the dense twin being timm's ViT;
- ``--config CONFIG``: a segmentor's or recognizer's whole ``mode='tensor'``
  forward (``benchmark_whole.build_whole_models``'s twins).

Examples::

    python tools/deployment/benchmark_deploy.py --preset vit-b-224 \\
        --batch 1 8 --json benchmarks/deploy_vit_b_224.json
    python tools/deployment/benchmark_deploy.py \\
        --config configs/ade20k/dyt_vitb_segmenter.py --shape 512 512 \\
        --batch 1 --json benchmarks/deploy_segmenter_512.json
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..',
                            'analysis_tools'))

import mmdyt  # noqa: E402,F401  (compat fixes, registration)
from benchmark import cpu_bf16, cpu_model  # noqa: E402
from benchmark_models import (PRESETS, build_benchmark_models,  # noqa: E402
                              format_markdown, ratio_fields,
                              set_activation_rate, time_interleaved)
from mmdyt.engine import find_dyt_backbone  # noqa: E402
from mmdyt.models.layers.dispatcher import mean_rate  # noqa: E402
from mmdyt.models.flops import backbone_flops  # noqa: E402
from onnx_export import TensorModel, export_onnx  # noqa: E402
from onnx_runtime import ExportedModel  # noqa: E402

#: The twins, in table order.
TWINS = ('dense', 'adapter', 'dyt')
#: The runtimes, in table order; ``torch`` is PyTorch eager.
RUNTIME_NAMES = ('torch', 'ort', 'openvino')
#: Largest difference of a runtime's output from PyTorch's, relative to the
#: largest PyTorch output, before anything is timed.
OUTPUT_TOLERANCE = 1e-3


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--preset', choices=sorted(PRESETS),
                      help='a backbone setting')
    what.add_argument('--config', help='a segmentation or video config: '
                      'its whole mode=tensor forward')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size of --config (default: its '
                        'backbone\'s img_size)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1])
    parser.add_argument('--rate', type=float, default=0.5,
                        help='DyT\'s activation rate (default 0.5)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--export-dir',
                        help='keep the exported files here (default: a '
                        'temporary folder)')
    parser.add_argument('--json', help='write the rows to this file')
    args = parser.parse_args(argv)
    if not 0 <= args.rate <= 1:
        parser.error(f'--rate must be in [0, 1], got {args.rate}')
    return args


def backbone_twins(preset: str) -> Tuple[Dict[str, nn.Module], nn.Module,
                                         Tuple[int, int], Optional[int]]:
    """The dense, adapter-only and DyT backbones of a preset, the DyT
    backbone, the image size and the frames per clip."""
    spec = PRESETS[preset]
    models = build_benchmark_models(spec['arch'], spec['img_size'],
                                    vitdet=spec.get('vitdet', False))
    twins = dict(dense=models.dense, adapter=models.adapter,
                 dyt=models.dyt)
    size = (spec['img_size'], spec['img_size'])
    return twins, models.dyt, size, spec['num_frames']


def whole_twins(config: str, shape: Optional[Sequence[int]]):
    """The dense, adapter-only and DyT twins of a config's whole
    ``mode='tensor'`` forward (:class:`TensorModel`), as
    :func:`backbone_twins` returns them."""
    from benchmark_whole import build_whole_models
    from model_inputs import load_config
    cfg = load_config(config)
    models = build_whole_models(cfg)
    if models.task == 'detector':
        raise ValueError('benchmark_deploy.py times segmentors and '
                         'recognizers (a detector export holds only the '
                         'backbone and neck)')
    twins = {name: TensorModel(getattr(models, name), models.task).eval()
             for name in TWINS}
    backbone = find_dyt_backbone(models.dyt)
    size = tuple(shape) if shape else (backbone.img_size, ) * 2
    return twins, backbone, size, models.num_frames


def _flops_bound(backbone: nn.Module, twins: Dict[str, nn.Module],
                 sample: Tuple[int, ...], rates: List[float],
                 batch: int) -> float:
    """Dense over DyT FLOPs of one sample (the whole model's for a
    :class:`TensorModel`, the backbone's otherwise)."""
    dyt = twins['dyt']
    if isinstance(dyt, TensorModel):
        from model_flops import model_flops_report
        report = model_flops_report(dyt.model, sample, rates, 'set', batch)
        return report.whole('dense') / report.whole('dyt')
    size = tuple(sample[-2:])
    return (backbone_flops(backbone, size, with_dyt=False).total /
            backbone_flops(backbone, size, rates).total)


def _check_outputs(name: str, runtime_out: List[np.ndarray],
                   torch_out) -> float:
    """The largest relative difference of a runtime's first output from
    PyTorch's; raise above :data:`OUTPUT_TOLERANCE`."""
    ref = torch_out[0] if isinstance(torch_out, (tuple, list)) else torch_out
    ref = ref.detach().numpy()
    error = float(np.abs(runtime_out[0] - ref).max() /
                  max(np.abs(ref).max(), 1e-12))
    if error > OUTPUT_TOLERANCE:
        raise RuntimeError(f'{name}: the runtime\'s output differs from '
                           f'PyTorch\'s by {error:.2e} (relative)')
    return error


def benchmark_setting(setting: str, twins: Dict[str, nn.Module],
                      backbone: nn.Module, inputs: torch.Tensor,
                      rate: float, export_dir: str, threads: int,
                      warmup: int, repeats: int) -> dict:
    """Export the twins, check and time the nine models on ``inputs``."""
    set_activation_rate(backbone, inputs, rate)
    with torch.inference_mode():
        masks = backbone.forward_with_masks(inputs)[1]
        reference = {name: twins[name](inputs) for name in TWINS}
    rates = [float(m.float().mean()) for m in masks]
    batch = inputs.shape[0]
    runners = {}
    errors = {}
    for name in TWINS:
        path = osp.join(export_dir, f'{setting}_{name}_b{batch}.onnx')
        export_onnx(twins[name].eval(), inputs, path)
        for runtime in RUNTIME_NAMES[1:]:
            model = ExportedModel(path, runtime, threads)
            key = f'{runtime}_{name}'
            errors[key] = _check_outputs(key, model(inputs.numpy()),
                                         reference[name])
            runners[key] = model
    array = inputs.numpy()
    forwards = {f'torch_{name}': twins[name] for name in TWINS}
    forwards['torch_dense_again'] = twins['dense']
    forwards.update({key: (lambda x, m=model: m(array))
                     for key, model in runners.items()})
    times = time_interleaved(forwards, inputs, warmup, repeats)
    specs = [('noise_control', 'torch_dense_again', 'torch_dense')]
    for runtime in RUNTIME_NAMES:
        specs += [
            (f'{runtime}_speedup', f'{runtime}_dense', f'{runtime}_dyt'),
            (f'{runtime}_dyt_vs_adapter', f'{runtime}_adapter',
             f'{runtime}_dyt'),
        ]
        if runtime != 'torch':
            specs.append((f'{runtime}_dyt_vs_torch', 'torch_dyt',
                          f'{runtime}_dyt'))
    sample = tuple(inputs.shape[1:])
    return dict(
        setting=setting, batch=batch, threads=threads,
        rate=round(float(mean_rate(masks)), 4),
        flops_bound=round(_flops_bound(backbone, twins, sample, rates,
                                       batch), 4),
        **{f'{key}_ms': round(statistics.median(value), 2)
           for key, value in times.items()},
        **ratio_fields(times, *specs),
        output_errors={k: float(f'{v:.2e}') for k, v in errors.items()},
        cpu=cpu_model(), cpu_bf16=cpu_bf16(),
        repeats=repeats)


def _runtime_cell(key: str, ci: Optional[str] = None, digits: int = 3):
    """A cell of the runtime-prefixed field ``key`` (and its interval)."""
    def cell(line: dict) -> str:
        value = line.get(f'{line["runtime"]}_{key}')
        if value is None:
            return '—'
        text = f'{value:.{digits}f}'

        if ci:
            low, high = line[f'{line["runtime"]}_{ci}']
            text += f' [{low:.3f}, {high:.3f}]'
        return text
    return cell


#: Columns of :func:`format_rows`: one line per setting and runtime.
COLUMNS = (
    ('setting', 'setting', None),
    ('batch', 'batch', None),
    ('runtime', 'runtime', None),
    ('FLOPs bound', 'flops_bound', None),
    ('dense ms', _runtime_cell('dense_ms', digits=1), None),
    ('adapter-only ms', _runtime_cell('adapter_ms', digits=1), None),
    ('DyT ms', _runtime_cell('dyt_ms', digits=1), None),
    ('dense / DyT', _runtime_cell('speedup', 'speedup_ci'), None),
    ('adapter-only / DyT',
     _runtime_cell('dyt_vs_adapter', 'dyt_vs_adapter_ci'), None),
    ('PyTorch DyT / this DyT',
     _runtime_cell('dyt_vs_torch', 'dyt_vs_torch_ci'), None),
    ('noise control', 'noise_control', 'noise_control_ci'),
)


def format_rows(rows: Sequence[dict]) -> str:
    """A markdown table of the rows, one line per runtime."""
    return format_markdown([dict(row, runtime=runtime) for row in rows
                            for runtime in RUNTIME_NAMES], COLUMNS)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.preset:
        twins, backbone, size, frames = backbone_twins(args.preset)
        setting = args.preset
    else:
        twins, backbone, size, frames = whole_twins(args.config, args.shape)
        setting = osp.splitext(osp.basename(args.config))[0] + \
            f'-{size[0]}x{size[1]}'
    export_dir = args.export_dir or tempfile.mkdtemp(prefix='mmdyt_onnx_')
    os.makedirs(export_dir, exist_ok=True)
    rows = []
    for batch in args.batch:
        generator = torch.Generator().manual_seed(0)
        shape = (batch, 3) + ((frames, ) if frames else ()) + tuple(size)
        inputs = torch.randn(*shape, generator=generator)
        print(f'{setting}, batch {batch}: exporting and checking the twins '
              f'in {export_dir}', flush=True)
        rows.append(benchmark_setting(setting, twins, backbone, inputs,
                                      args.rate, export_dir, args.threads,
                                      args.warmup, args.repeats))
    print(format_rows(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
        print(f'wrote {args.json}')
    return rows


if __name__ == '__main__':
    main()
