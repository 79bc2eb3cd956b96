"""Timing one backbone setting: DyT against the dense ViT, in one process.

:func:`benchmark_setting` times the backbones of a :class:`BenchmarkModels`
(``models.py``) on one random batch and compares DyT's measured speedup
with the FLOPs bound at the measured activation rate.

Timing (:func:`~mmdyt_tools.benchmark.timing.time_interleaved`) runs under
``torch.inference_mode`` with warm-up, then interleaves the models in every
repeat (in a rotating order) so that load changes on a shared machine hit
all of them alike, and reports median milliseconds per forward. The
low-precision peers are interleaved among themselves, right after the
float32 models: ratios between two of them are interleaved, ratios of a
low-precision peer to a float32 model compare consecutive groups. Every ratio
comes with a 95% bootstrap interval over the repeats
(:func:`~mmdyt_tools.benchmark.stats.bootstrap_ratio`): with enough repeats
it can tell a 2% difference from noise, and the noise control says how
large the noise is. The inputs are built on the CPU.
"""
import statistics
from typing import Dict, List, Optional

import torch
from mmengine.logging import print_log

from mmdyt.models.layers.dispatcher import mean_rate
from mmdyt.models.flops import backbone_flops
from mmdyt_tools.benchmark.checks import check_peers
from mmdyt_tools.benchmark.host_syncs import count_host_syncs
from mmdyt_tools.benchmark.machine import device_name
from mmdyt_tools.benchmark.model_set import BenchmarkModels
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.benchmark.stats import ratio_fields
from mmdyt_tools.benchmark.timing import time_interleaved


def peer_fields(times: Dict[str, List[float]], kind: str, gain: str,
                bound: float, seed: int = 0) -> dict:
    """Row fields of the peers ``dense_<kind>`` and ``dyt_<kind>`` (the
    dense model and DyT compiled, pre-packed or under bfloat16 autocast):
    ``<kind>_speedup`` (peer dense / peer DyT time) and
    ``<kind>_efficiency`` (over the FLOPs ``bound``), ``dense_<gain>_gain``
    and ``dyt_<gain>_gain`` (eager / peer time of each) and
    ``dyt_<kind>_vs_dense`` (eager dense / peer DyT time), each with its
    interval.
    """
    dense, dyt = f'dense_{kind}', f'dyt_{kind}'
    fields = ratio_fields(times, (f'{kind}_speedup', dense, dyt),
                          (f'dense_{gain}_gain', 'dense', dense),
                          (f'dyt_{gain}_gain', 'dyt', dyt),
                          (f'dyt_{kind}_vs_dense', 'dense', dyt),
                          seed=seed)
    fields.update(efficiency_fields(fields, f'{kind}_speedup',
                                    f'{kind}_efficiency', bound))
    return fields


#: The dense bfloat16 peers, one of which (the faster) DyT's bfloat16 time
#: is compared with.
DENSE_BF16_PEERS = ('dense_bf16', 'dense_bf16_compiled')


def bf16_fields(times: Dict[str, List[float]], seed: int = 0) -> dict:
    """Row fields of the bfloat16 peers: ``best_dense_bf16`` (the faster
    of :data:`DENSE_BF16_PEERS` by median), ``dyt_bf16_vs_best_dense_bf16``
    and ``ideal_bf16_vs_best_dense_bf16`` (its time over DyT's and the
    ideal slice's), ``dyt_bf16_vs_ideal_bf16``, ``dyt_bf16_vs_amp_today``
    and ``dense_bf16_vs_amp_today`` (autocast alone over the low-precision
    path), ``dyt_bf16_vs_fp32`` (float32 DyT over bfloat16 DyT) and, with
    compiled peers, ``dyt_bf16_compiled_vs_best_dense_bf16``; each ratio
    with its interval."""
    dense = [name for name in DENSE_BF16_PEERS if name in times]
    best = min(dense, key=lambda name: statistics.median(times[name]))
    pairs = [('dyt_bf16_vs_best_dense_bf16', best, 'dyt_bf16'),
             ('ideal_bf16_vs_best_dense_bf16', best, 'ideal_bf16'),
             ('dyt_bf16_vs_ideal_bf16', 'ideal_bf16', 'dyt_bf16'),
             ('dyt_bf16_vs_amp_today', 'dyt_bf16_amp', 'dyt_bf16'),
             ('dense_bf16_vs_amp_today', 'dense_bf16_amp', 'dense_bf16'),
             ('dyt_bf16_vs_fp32', 'dyt', 'dyt_bf16')]
    if 'dyt_bf16_compiled' in times:
        pairs.append(('dyt_bf16_compiled_vs_best_dense_bf16', best,
                      'dyt_bf16_compiled'))
    return dict(best_dense_bf16=best,
                **ratio_fields(times, *pairs, seed=seed))


def efficiency_fields(row: dict, speedup: str, key: str, bound: float) -> dict:
    """``key`` and ``key_ci``: the speedup field of ``row`` over the FLOPs
    bound."""
    return {
        key: round(row[speedup] / bound, 4),
        f'{key}_ci': [round(c / bound, 4) for c in row[f'{speedup}_ci']],
    }


def benchmark_setting(models: BenchmarkModels,
                      setting: str,
                      batch: int,
                      img_size: int,
                      num_frames: Optional[int] = None,
                      rate: Optional[float] = None,
                      warmup: int = 2,
                      repeats: int = 10,
                      timer: str = 'wall',
                      seed: int = 0,
                      device: str = 'cpu') -> dict:
    """Time the models on one batch and compare with their FLOPs.

    Args:
        models (BenchmarkModels): The models.
        setting (str): Name of the setting, for the row.
        batch (int): Batch size (images, or clips).
        img_size (int): Input height and width.
        num_frames (int, optional): Frames per clip; None for images.
        rate (float, optional): Target activation rate
            (:func:`set_activation_rate`); None keeps the dispatchers as
            they are. Defaults to None.
        warmup (int): Untimed forwards per model. Defaults to 2.
        repeats (int): Timed forwards per model. Defaults to 10.
        timer (str): ``'wall'`` or ``'cpu'`` (:data:`TIMERS`).
            Defaults to ``'wall'``.
        seed (int): Seed of the random inputs. Defaults to 0.
        device (str): The device the models are on; the inputs are drawn
            on the CPU and moved there. Defaults to ``'cpu'``.

    Returns:
        dict: ``setting, batch, rate`` (measured mean rate of DyT),
        ``<model>_ms`` (medians), ``speedup`` (dense / DyT time),
        ``flops_speedup`` (dense / DyT FLOPs at the measured rates),
        ``efficiency`` (their ratio), ``reference_speedup`` (dense /
        reference-gather time), ``dyt_vs_reference`` (reference / DyT
        time), ``adapter_vs_dense`` (adapter-only / dense time),
        ``noise_control`` (dense timed twice), each ratio with a ``_ci``
        interval where it matters, ``dyt_overhead`` (DyT over adapter-only
        time, minus 1), ``ideal_speedup`` (dense / ideal-slice time),
        ``dyt_vs_ideal`` (ideal-slice / DyT time) and the GFLOPs of one
        sample per model. With compiled peers also ``compiled_speedup``
        (compiled dense / compiled DyT time), ``compiled_efficiency``,
        ``dense_compile_gain`` and ``dyt_compile_gain`` (eager / compiled
        time of each) and ``dyt_compiled_vs_dense`` (eager dense / compiled
        DyT time). With pre-packed peers likewise ``prepacked_speedup``,
        ``prepacked_efficiency``, ``dense_prepack_gain``,
        ``dyt_prepack_gain`` and ``dyt_prepacked_vs_dense``; with bfloat16
        peers ``bf16_speedup``, ``bf16_efficiency``, ``dense_bf16_gain``,
        ``dyt_bf16_gain`` and ``dyt_bf16_vs_dense`` and the fields of
        :func:`bf16_fields`.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, img_size, img_size) if num_frames is None else \
        (batch, 3, num_frames, img_size, img_size)
    inputs = torch.randn(*shape, generator=generator).to(device)
    dyt = models.dyt
    if rate is not None:
        set_activation_rate(dyt, inputs, rate)
    with torch.inference_mode():
        masks = dyt.forward_with_masks(inputs)[1]
    site_rates = [float(m.float().mean()) for m in masks]
    models.ideal.set_active(masks)
    check_peers(models, inputs)
    measured = float(mean_rate(masks))

    size = (img_size, img_size)
    frames = num_frames or 1
    gflops = {
        'dense': backbone_flops(dyt, size, with_dyt=False).total,
        'adapter': backbone_flops(models.adapter, size).total,
        'dyt': backbone_flops(dyt, size, site_rates).total,
    }
    gflops = {k: v * frames / 1e9 for k, v in gflops.items()}

    # the low-precision peers are interleaved among themselves, after the
    # float32 models: a float32 forward between two of them (5-10x longer)
    # would evict what they keep warm and blur their 5-10% differences
    everything = models.as_dict()
    float32 = {k: v for k, v in everything.items() if k not in models.bf16}
    times = time_interleaved(float32, inputs, warmup, repeats, timer)
    if models.bf16:
        times.update(
            time_interleaved(models.bf16, inputs, warmup, repeats, timer))
    ms = {
        name: statistics.median(values)
        for name, values in times.items()
    }
    flops_speedup = gflops['dense'] / gflops['dyt']

    row = dict(
        setting=setting,
        batch=batch,
        rate=round(measured, 4),
        **{f'{name}_ms': round(value, 2)
           for name, value in ms.items()},
        **ratio_fields(times, ('speedup', 'dense', 'dyt'),
                       ('reference_speedup', 'dense', 'reference'),
                       ('dyt_vs_reference', 'reference', 'dyt'),
                       ('adapter_vs_dense', 'adapter', 'dense'),
                       ('noise_control', 'dense_again', 'dense'),
                       ('ideal_speedup', 'dense', 'ideal'),
                       ('dyt_vs_ideal', 'ideal', 'dyt'),
                       seed=seed),
        flops_speedup=round(flops_speedup, 4),
        dyt_overhead=round(ms['dyt'] / ms['adapter'] - 1, 4),
        dense_gflops=round(gflops['dense'], 6),
        adapter_gflops=round(gflops['adapter'], 6),
        dyt_gflops=round(gflops['dyt'], 6),
        threads=torch.get_num_threads(),
        repeats=repeats,
        timer=timer,
        device=device_name(inputs.device))
    if inputs.device.type == 'cuda':  # host synchronisations per forward
        row.update({f'{name}_host_syncs': count_host_syncs(model, inputs)
                    for name, model in models.as_dict().items()
                    if name != 'dense_again'})
    row.update(efficiency_fields(row, 'speedup', 'efficiency', flops_speedup))
    for kind, gain, peers in (('compiled', 'compile', models.compiled),
                              ('prepacked', 'prepack', models.prepacked),
                              ('bf16', 'bf16', models.bf16)):
        if peers:
            row.update(
                peer_fields(times, kind, gain, flops_speedup, seed=seed))
    if models.bf16:
        row.update(bf16_fields(times, seed=seed))
    print_log(
        f'{setting} batch {batch}, {row["threads"]} threads: rate '
        f'{measured:.3f}, speedup {row["speedup"]:.3f} '
        f'{row["speedup_ci"]} (FLOPs bound {flops_speedup:.3f}), vs the '
        f'reference gather {row["dyt_vs_reference"]:.3f}',
        logger='current')
    return row
