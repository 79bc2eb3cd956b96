"""Speed of DyT in the deployment runtimes: PyTorch eager, ONNX Runtime and
OpenVINO, against its adapter-only and dense twins, in one process.

For each setting the three twins share every weight (random: nothing is
downloaded; DyT's dispatchers are set to a rate with
``rate.set_activation_rate``) and each is exported to ONNX
(``mmdyt_tools.deploy.onnx_export``, DyT with its data-dependent token
skipping), then run by ONNX Runtime and OpenVINO (float32, on the CPU)
beside the PyTorch eager model: nine models plus the PyTorch dense model
timed again (the noise control), interleaved in a rotating order
(``timing.time_interleaved``), ratios with 95% bootstrap intervals. Before
timing, every runtime's output is checked against PyTorch's
(:data:`OUTPUT_TOLERANCE`). With ``openvino_bf16`` OpenVINO also runs the
three exports at bfloat16 inference precision (checked against PyTorch's
float32 outputs to :data:`BF16_TOLERANCE`).
"""
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from mmdyt.engine import find_dyt_backbone
from mmdyt.models.layers.dispatcher import mean_rate
from mmdyt.models.flops import backbone_flops
from mmdyt_tools.benchmark.machine import cpu_bf16, cpu_model
from mmdyt_tools.benchmark.models import build_benchmark_models
from mmdyt_tools.benchmark.presets import PRESETS
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.benchmark.report import format_markdown
from mmdyt_tools.benchmark.stats import ratio_fields
from mmdyt_tools.benchmark.timing import time_interleaved
from mmdyt_tools.deploy.onnx_export import TensorModel, export_onnx
from mmdyt_tools.deploy.onnx_runtime import ExportedModel

#: The twins, in table order.
TWINS = ('dense', 'adapter', 'dyt')
#: The runtimes, in table order; ``torch`` is PyTorch eager.
RUNTIME_NAMES = ('torch', 'ort', 'openvino')
#: The runtimes in ONNX files: (runtime, OpenVINO inference precision) by
#: name; ``openvino_bf16`` is opt-in (``benchmark_runtimes``).
EXPORTED_RUNTIMES = {'ort': ('ort', 'f32'), 'openvino': ('openvino', 'f32'),
                     'openvino_bf16': ('openvino', 'bf16')}
#: Largest difference of a runtime's output from PyTorch's, relative to the
#: largest PyTorch output, before anything is timed.
OUTPUT_TOLERANCE = 1e-3
#: The same for bfloat16 inference, relative (Frobenius) error of the whole
#: output, by twin: DyT's is looser, because tokens whose scores lie near
#: the threshold flip when OpenVINO scores them in bfloat16 (the benchmark's
#: random dispatchers, shifted to a rate, put many tokens there; 0.09 was
#: seen at 224² batch 8).
BF16_TOLERANCE = {'dense': 0.05, 'adapter': 0.05, 'dyt': 0.15}


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
    from mmdyt_tools.benchmark.whole_model import build_whole_models
    from mmdyt_tools.inputs import load_config
    cfg = load_config(config)
    models = build_whole_models(cfg)
    if models.task == 'detector':
        raise ValueError('benchmark_runtimes.py times segmentors and '
                         'recognizers (a detector export holds only the '
                         'backbone and neck)')
    twins = {name: TensorModel(getattr(models, name), models.task).eval()
             for name in TWINS}
    backbone = find_dyt_backbone(models.dyt)
    img_size = backbone.img_size  # an int, or (H, W) as the demo configs
    size = tuple(shape) if shape else (
        (img_size, img_size) if isinstance(img_size, int) else tuple(img_size))
    return twins, backbone, size, models.num_frames


def _flops_bound(backbone: nn.Module, twins: Dict[str, nn.Module],
                 sample: Tuple[int, ...], rates: List[float],
                 batch: int) -> float:
    """Dense over DyT FLOPs of one sample (the whole model's for a
    :class:`TensorModel`, the backbone's otherwise)."""
    dyt = twins['dyt']
    if isinstance(dyt, TensorModel):
        from mmdyt_tools.flops import model_flops_report
        report = model_flops_report(dyt.model, sample, rates, 'set', batch)
        return report.whole('dense') / report.whole('dyt')
    size = tuple(sample[-2:])
    return (backbone_flops(backbone, size, with_dyt=False).total /
            backbone_flops(backbone, size, rates).total)


def _check_outputs(name: str, runtime_out: List[np.ndarray],
                   torch_out, bf16: Optional[str] = None) -> float:
    """The largest relative difference of a runtime's first output from
    PyTorch's, or for a ``bf16`` twin (its name) the relative Frobenius
    error; raise above :data:`OUTPUT_TOLERANCE` (:data:`BF16_TOLERANCE`)."""
    ref = torch_out[0] if isinstance(torch_out, (tuple, list)) else torch_out
    ref = ref.detach().numpy()
    if bf16:
        error = float(np.linalg.norm(runtime_out[0] - ref) /
                      max(np.linalg.norm(ref), 1e-12))
    else:
        error = float(np.abs(runtime_out[0] - ref).max() /
                      max(np.abs(ref).max(), 1e-12))
    if error > (BF16_TOLERANCE[bf16] if bf16 else OUTPUT_TOLERANCE):
        raise RuntimeError(f'{name}: the runtime\'s output differs from '
                           f'PyTorch\'s by {error:.2e} (relative)')
    return error


def benchmark_runtimes(setting: str, twins: Dict[str, nn.Module],
                       backbone: nn.Module, inputs: torch.Tensor,
                       rate: float, export_dir: str, threads: int,
                       warmup: int, repeats: int,
                       openvino_bf16: bool = False) -> dict:
    """Export the twins, check and time the nine models on ``inputs``.

    Args:
        setting (str): Name of the setting, for the row and the files.
        twins (dict[str, nn.Module]): The :data:`TWINS` by name.
        backbone (nn.Module): DyT's backbone (its rate is set here).
        inputs (torch.Tensor): The batch every model runs on.
        rate (float): DyT's target activation rate.
        export_dir (str): Where the ONNX files are written.
        threads (int): Threads of ONNX Runtime and OpenVINO.
        warmup (int): Untimed forwards per model.
        repeats (int): Timed forwards per model.
        openvino_bf16 (bool): Also run the exports in OpenVINO at bfloat16
            inference precision (``openvino_bf16``). Defaults to False.

    Returns:
        dict: The row: times, ratios with intervals, the FLOPs bound, the
        runtimes' output errors and the CPU.
    """
    set_activation_rate(backbone, inputs, rate)
    with torch.inference_mode():
        masks = backbone.forward_with_masks(inputs)[1]
        reference = {name: twins[name](inputs) for name in TWINS}
    rates = [float(m.float().mean()) for m in masks]
    batch = inputs.shape[0]
    runtimes = RUNTIME_NAMES + (('openvino_bf16', ) if openvino_bf16 else ())
    runners = {}
    errors = {}
    for name in TWINS:
        path = osp.join(export_dir, f'{setting}_{name}_b{batch}.onnx')
        export_onnx(twins[name].eval(), inputs, path)
        for runtime in runtimes[1:]:
            kind, precision = EXPORTED_RUNTIMES[runtime]
            model = ExportedModel(path, kind, threads, precision)
            key = f'{runtime}_{name}'
            errors[key] = _check_outputs(
                key, model(inputs.numpy()), reference[name],
                name if precision == 'bf16' else None)
            runners[key] = model
    array = inputs.numpy()
    forwards = {f'torch_{name}': twins[name] for name in TWINS}
    forwards['torch_dense_again'] = twins['dense']
    forwards.update({key: (lambda x, m=model: m(array))
                     for key, model in runners.items()})
    times = time_interleaved(forwards, inputs, warmup, repeats)
    specs = [('noise_control', 'torch_dense_again', 'torch_dense')]
    for runtime in runtimes:
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
        runtimes=list(runtimes), repeats=repeats)


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
    return format_markdown([
        dict(row, runtime=runtime) for row in rows
        for runtime in row.get('runtimes', RUNTIME_NAMES)
    ], COLUMNS)
