"""GFLOPs of a DyT model: dense, complete DyT, DyT at measured rates.

"Dense" is the frozen pre-trained network alone (ViT or Swin, no adapters
or dispatchers), "all tokens" the complete DyT model (every token through
every block, adapters included).

FLOPs are multiply-accumulates (fvcore / mmengine convention) of one sample
(an image, or a clip of T frames), for the backbone and for the whole model
at inference (backbone + neck + decode head, or + cls head; backbone + neck
for a detector, as the paper counts, beside its Table 11); the auxiliary
head of a segmentor is listed on its own (it only trains). The backbone is
counted analytically at the activation rate of each dispatcher measured on
``--num-samples`` inputs of the config's test dataset (random inputs if it
cannot be built, or with ``--inputs random``), or at a given ``--rate``;
necks and heads are dense and counted by mmengine's FlopAnalyzer. See
``mmdyt_tools.flops``. For the COCO recipes the paper's GFLOPs (Table 11),
read from ``configs/metafile.yml``, are printed beside the report.

Examples::

    python tools/analysis_tools/get_flops.py configs/ade20k/dyt_vitb.py \\
        --inputs random
    python tools/analysis_tools/get_flops.py configs/demo/seg_demo.py \\
        --checkpoint work_dirs/seg_demo/iter_600.pth --num-samples 50
    python tools/analysis_tools/get_flops.py CONFIG --shape 512 512 \\
        --json flops.json
    python tools/analysis_tools/get_flops.py \\
        configs/kinetics400/dyt_vitb_8x224.py --rate 0.5
    python tools/analysis_tools/get_flops.py \\
        configs/coco/dyt_vitb_mask-rcnn_1x.py --rate 0.5
"""
import argparse
import json
import os.path as osp
from typing import List, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.engine import find_dyt_backbone
from mmdyt_tools.flops import (measure_rates_on_dataloader,
                               measure_rates_on_random, model_flops_report)
from mmdyt_tools.inputs import (DEFAULT_NUM_FRAMES, clip_len_of,
                                init_task_model, load_config)
from mmdyt_tools.paper import paper_gflops


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config',
                        help='model config (mmseg, mmaction2 or mmdet)')
    parser.add_argument(
        '--checkpoint', help='trained model (default: random weights)')
    parser.add_argument(
        '--num-samples',
        type=int,
        default=20,
        help='samples to measure the activation rates on (default: 20)')
    parser.add_argument(
        '--inputs',
        choices=['auto', 'dataset', 'random'],
        default='auto',
        help="where the rates are measured: the config's test dataset, "
        'random inputs, or the dataset if it can be built (default)')
    parser.add_argument(
        '--rate',
        type=float,
        help='give the DyT column at this activation rate at every '
        'dispatcher instead of measuring the rates (e.g. 0.5, the usual '
        'target, for an untrained model)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size FLOPs are given for (default: the backbone's "
        'img_size)')
    parser.add_argument(
        '--num-frames',
        type=int,
        help='frames per clip of a video model (default: the test '
        f'pipeline\'s clip_len, else {DEFAULT_NUM_FRAMES})')
    parser.add_argument('--json', help='also write the report to this file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings')
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error('--num-samples must be >= 1')
    if args.rate is not None and not 0 <= args.rate <= 1:
        parser.error('--rate must be in [0, 1]')
    return args


def input_shape_of(cfg: Config, backbone, args: argparse.Namespace
                   ) -> Tuple[int, ...]:
    """One sample's shape: (C, H, W), or (C, T, H, W) for mmaction2."""
    size = tuple(args.shape) if args.shape else tuple(backbone.img_size)
    if cfg.default_scope != 'mmaction':
        return (backbone.in_channels, *size)
    frames = args.num_frames or clip_len_of(cfg) or DEFAULT_NUM_FRAMES
    return (backbone.in_channels, frames, *size)


def build_test_dataloader(cfg: Config):
    """The config's test dataloader, in this process (no workers)."""
    from mmengine.runner import Runner
    if cfg.get('test_dataloader') is None:
        raise ValueError('the config has no test_dataloader')
    loader_cfg = dict(
        cfg.test_dataloader, num_workers=0, persistent_workers=False)
    return Runner.build_dataloader(loader_cfg)


def measure_rates(cfg: Config, model, input_shape, args):
    """Rates per dispatcher site and a description of where they come from.
    """
    backbone = find_dyt_backbone(model)
    if not backbone.dispatch_sites:
        return None, 'no dispatchers (adapter-only)', 0
    if args.rate is not None:
        return [args.rate] * len(backbone.dispatch_sites), \
            f'--rate {args.rate} at every dispatcher (not measured)', 0
    if args.inputs in ('auto', 'dataset'):
        try:
            dataloader = build_test_dataloader(cfg)
        except Exception as error:  # missing data, unknown dataset, ...
            if args.inputs == 'dataset':
                raise
            print_log(
                f'cannot build the test dataset ({type(error).__name__}: '
                f'{error}); measuring the rates on random inputs instead',
                logger='current',
                level=30)
        else:
            rates, samples = measure_rates_on_dataloader(
                model, dataloader, args.num_samples)
            return rates, f'test dataset, {samples} samples', samples
    rates = measure_rates_on_random(backbone, input_shape, args.num_samples)
    return rates, f'random inputs, {args.num_samples} samples', \
        args.num_samples


def format_rates(sites, rates) -> str:
    """One line per block: ``block 3: mlp 0.512``."""
    per_block = {}
    for (block, site), rate in zip(sites, rates):
        per_block.setdefault(block, []).append(f'{site} {rate:.3f}')
    return '\n'.join(f'  block {block}: {", ".join(items)}'
                     for block, items in per_block.items())


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the tool; returns the report as a dict (also for tests)."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = init_task_model(cfg, args.checkpoint)
    backbone = find_dyt_backbone(model)
    if backbone is None:
        raise ValueError(f'{args.config}: the model has no DyTViT backbone')
    if args.checkpoint is None and backbone.dispatch_sites and \
            args.rate is None:
        print_log(
            'no --checkpoint: the dispatchers are untrained (random), so the '
            'measured rates (~0.5) say nothing about a trained model',
            logger='current',
            level=30)
    input_shape = input_shape_of(cfg, backbone, args)
    rates, source, samples = measure_rates(cfg, model, input_shape, args)
    report = model_flops_report(model, input_shape, rates, source, samples)

    print(f'\n{osp.basename(args.config)}: GFLOPs of one '
          f'{"x".join(map(str, input_shape))} sample (multiply-accumulates)')
    print(f'activation rates: {source}')
    if rates:
        print(format_rates(report.sites, rates))
    print('\n' + report.format_table())
    counted, paper = paper_gflops(args.config) or (None, None)
    if paper:
        print(f'\nthe paper ({counted} GFLOPs): ' + ', '.join(
            f'{row} {gflops:.2f}' for row, gflops in paper.items()))
    print('\nparameters (total / trainable):')
    for name, (total, trainable) in report.params.items():
        print(f'  {name}: {total / 1e6:.2f}M / {trainable / 1e6:.3f}M')
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  **report.to_dict())
    if paper:
        result['paper_gflops'] = paper
    if args.json:
        with open(args.json, 'w') as file:
            json.dump(result, file, indent=2)
        print(f'\nwrote {args.json}')
    return result


if __name__ == '__main__':
    main()
