"""How much mixed precision changes DyT's decisions and predictions.

Runs a trained segmentation model on the config's test set twice, in float32
and under autocast (bfloat16 on CPUs, float16 on GPUs), and reports the
agreement of the token dispatch masks (the gathered path's decisions), of
the predicted label maps, and the config's test metric (mmseg's
``IoUMetric``: mIoU) in each precision. Example::

    python tools/analysis_tools/amp_agreement.py configs/demo/seg_demo.py \\
        work_dirs/seg_demo/iter_600.pth
"""
import argparse
import contextlib
from typing import List, Tuple

import torch
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from torch import Tensor, nn

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.inputs import init_task_model, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='segmentation config')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--batch-size', type=int, default=10)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings')
    return parser.parse_args()


def run(model: nn.Module, dataset, evaluator: Evaluator, batch_size: int,
        autocast: bool) -> Tuple[Tensor, List[Tensor], dict]:
    """Run the test set in float32 or under autocast.

    Args:
        model (nn.Module): A DyT segmentor in eval mode.
        dataset: The test dataset (with its test pipeline).
        evaluator (Evaluator): The config's test evaluator.
        batch_size (int): Images per ``test_step``.
        autocast (bool): Whether to run under ``torch.autocast``.

    Returns:
        tuple: The dispatch masks (one row per image), the label maps and
        the evaluator's metrics.
    """
    device = next(model.parameters()).device.type
    dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    context = torch.autocast(device, dtype=dtype) if autocast else \
        contextlib.nullcontext()
    masks, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = pseudo_collate([
            dataset[i]
            for i in range(start, min(start + batch_size, len(dataset)))
        ])
        with torch.no_grad(), context:
            outputs = model.test_step(batch)
        masks.append(torch.cat(
            [m.bool().flatten(1) for m in model.backbone.dispatch_masks], 1))
        labels += [out.pred_sem_seg.data for out in outputs]
        evaluator.process(data_samples=outputs, data_batch=batch)
    return torch.cat(masks), labels, evaluator.evaluate(len(dataset))


def compare(model: nn.Module, dataset, evaluator: Evaluator,
            batch_size: int = 10) -> dict:
    """Float32 vs autocast on the test set.

    Args:
        model (nn.Module): A DyT segmentor in eval mode.
        dataset: The test dataset.
        evaluator (Evaluator): The config's test evaluator (its
            ``dataset_meta`` set).
        batch_size (int): Images per ``test_step``. Defaults to 10.

    Returns:
        dict: ``decisions_differ`` and ``decisions`` (dispatch decisions
        that differ, of all), ``same_images`` (images whose masks are
        identical), ``rate_fp32`` and ``rate_amp`` (activation rates),
        ``pixels_agree`` (fraction of equal predicted pixels, mean over
        images), and ``metrics_fp32`` and ``metrics_amp`` (the evaluator's
        metrics, e.g. ``mIoU``).
    """
    ref_masks, ref_labels, ref_metrics = run(model, dataset, evaluator,
                                             batch_size, False)
    masks, labels, metrics = run(model, dataset, evaluator, batch_size, True)
    pixels = torch.stack([(a == b).float().mean()
                          for a, b in zip(labels, ref_labels)]).mean()
    return dict(
        decisions_differ=int((masks != ref_masks).sum()),
        decisions=masks.numel(),
        same_images=sum(bool(torch.equal(a, b))
                        for a, b in zip(masks, ref_masks)),
        images=len(masks),
        rate_fp32=float(ref_masks.float().mean()),
        rate_amp=float(masks.float().mean()),
        pixels_agree=float(pixels),
        metrics_fp32=ref_metrics,
        metrics_amp=metrics)


def main() -> dict:
    """Run the comparison; returns :func:`compare`'s result."""
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    cfg.model.backbone.init_cfg = None  # the checkpoint has every weight
    model = init_task_model(
        cfg, args.checkpoint,
        device='cuda' if torch.cuda.is_available() else 'cpu')
    from mmseg.registry import DATASETS
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    result = compare(model, dataset, evaluator, args.batch_size)
    differ, decisions = result['decisions_differ'], result['decisions']
    print(f'token dispatch decisions: {100 * (1 - differ / decisions):.3f}'
          f'% agree ({differ} of {decisions} differ; '
          f'{result["same_images"]} of {result["images"]} images with '
          'identical masks)')
    print(f'activation rate: {result["rate_fp32"]:.4f} float32, '
          f'{result["rate_amp"]:.4f} autocast')
    print(f'predicted labels: {100 * result["pixels_agree"]:.3f}% of pixels '
          'agree')
    for key, value in result['metrics_fp32'].items():
        amp = result['metrics_amp'][key]
        print(f'{key}: {value:.2f} float32, {amp:.2f} autocast '
              f'({amp - value:+.2f})')
    return result


if __name__ == '__main__':
    main()
