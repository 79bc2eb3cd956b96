"""How much mixed precision changes DyT's decisions and predictions.

Runs a trained segmentation model on the config's test set twice, in float32
and under autocast (bfloat16 on CPUs, float16 on GPUs), and reports the
agreement of the token dispatch masks (the gathered path's decisions) and
of the predicted label maps. Example::

    python tools/analysis_tools/amp_agreement.py configs/demo/seg_demo.py \\
        work_dirs/seg_demo/iter_600.pth
"""
import argparse
import contextlib

import torch
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate

import mmdyt  # noqa: F401  (compat fixes, registration)
from model_inputs import init_task_model, load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='segmentation config')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--batch-size', type=int, default=10)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings')
    return parser.parse_args()


def run(model, dataset, batch_size: int, autocast: bool):
    """Dispatch masks (one row per image) and label maps of the test set."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
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
    return torch.cat(masks), labels


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    cfg.model.backbone.init_cfg = None  # the checkpoint has every weight
    model = init_task_model(
        cfg, args.checkpoint,
        device='cuda' if torch.cuda.is_available() else 'cpu')
    from mmseg.registry import DATASETS
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    ref_masks, ref_labels = run(model, dataset, args.batch_size, False)
    masks, labels = run(model, dataset, args.batch_size, True)
    differ = int((masks != ref_masks).sum())
    same_images = sum(bool(torch.equal(a, b))
                      for a, b in zip(masks, ref_masks))
    pixels = torch.stack([(a == b).float().mean()
                          for a, b in zip(labels, ref_labels)]).mean()
    print(f'token dispatch decisions: {100 * (1 - differ / masks.numel()):.3f}'
          f'% agree ({differ} of {masks.numel()} differ; {same_images} of '
          f'{len(masks)} images with identical masks)')
    print(f'activation rate: {ref_masks.float().mean():.4f} float32, '
          f'{masks.float().mean():.4f} autocast')
    print(f'predicted labels: {100 * float(pixels):.3f}% of pixels agree')


if __name__ == '__main__':
    main()
