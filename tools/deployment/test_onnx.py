"""Evaluate an exported model on its config's test set, as tools/test.py.

The runtime (ONNX Runtime or OpenVINO) runs the network; the config's test
pipeline, data preprocessor, sliding window and post-processing and its
``test_evaluator`` (mmseg's ``IoUMetric``, mmaction2's accuracy) are the
libraries' own (``mmdyt_tools.deploy.onnx_task``). With ``--checkpoint``
the PyTorch model is evaluated too and both are printed. Examples::

    python tools/deployment/test_onnx.py work_dirs/seg_demo/dyt.onnx
    python tools/deployment/test_onnx.py work_dirs/seg_demo/dyt.onnx \\
        --runtime openvino --checkpoint work_dirs/seg_demo/iter_600.pth
"""
import argparse
import os.path as osp
from typing import List, Optional

from mmengine.config import DictAction

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.deploy.onnx_runtime import RUNTIMES, ExportedModel, describe
from mmdyt_tools.deploy.onnx_task import (config_of, evaluate,
                                          onnx_task_model)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', help='an .onnx file of pytorch2onnx.py')
    parser.add_argument('--runtime', choices=RUNTIMES, default='ort')
    parser.add_argument('--threads', type=int, help='runtime threads')
    parser.add_argument('--config',
                        help='config to use instead of the file\'s own')
    parser.add_argument('--checkpoint',
                        help='also evaluate this PyTorch checkpoint')
    parser.add_argument('--batch-size', type=int,
                        help='samples per step (default: the test '
                        'dataloader\'s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings (e.g. the test data root)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    """Evaluate; returns ``{'onnx': metrics, 'pytorch': metrics}``."""
    args = parse_args(argv)
    if not osp.isfile(args.model):
        raise FileNotFoundError(f'{args.model} not found')
    exported = ExportedModel(args.model, args.runtime, args.threads)
    cfg = config_of(exported, args.config, args.cfg_options)
    print(f'{args.model} ({describe(exported.metadata)}) on '
          f'{args.runtime}')
    model = onnx_task_model(cfg, exported)
    results = dict(onnx=evaluate(model, cfg, args.batch_size))
    rate = model.onnx_rates.mean()
    if args.checkpoint:
        from mmdyt_tools.inputs import init_task_model
        cfg.model.backbone.init_cfg = None
        torch_model = init_task_model(cfg, args.checkpoint)
        results['pytorch'] = evaluate(torch_model, cfg, args.batch_size)
    for key, value in results['onnx'].items():
        line = f'{key}: {value:.2f} {args.runtime}'
        if 'pytorch' in results:
            ref = results['pytorch'][key]
            line += f', {ref:.2f} pytorch ({value - ref:+.2f})'
        print(line)
    if rate is not None:
        print(f'activation rate (act_rate output, mean over the forwards): '
              f'{rate:.4f}')
    return results


if __name__ == '__main__':
    main()
