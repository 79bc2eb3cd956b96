"""Run an exported model on images or videos with ONNX Runtime or OpenVINO.

A segmentor's predictions are drawn over each image and written to
``--out-dir`` as ``tools/test.py --show-dir`` does (mmseg's
``SegLocalVisualizer``, the dataset's palette), with the predicted label
map beside it (``<name>_label.png``); a recognizer's top classes are
printed per video. The preprocessing (the config's test pipeline and data
preprocessor) and post-processing are the libraries' own, from the config
stored in the file (``mmdyt_tools.deploy.onnx_task``). Examples::

    python tools/deployment/onnx_infer.py work_dirs/seg_demo/dyt.onnx \\
        data/demo/seg/images/validation/*.jpg --out-dir work_dirs/onnx_vis
    python tools/deployment/onnx_infer.py video.onnx clip.mp4 \\
        --runtime openvino
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import numpy as np
from mmengine.config import DictAction
from mmengine.dataset import Compose, pseudo_collate

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt_tools.deploy.onnx_runtime import RUNTIMES, ExportedModel, describe
from mmdyt_tools.deploy.onnx_task import config_of, onnx_task_model

#: Pipeline steps that read annotations, which plain inputs do not have.
ANNOTATION_STEPS = ('LoadAnnotations', )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', help='an .onnx file of pytorch2onnx.py')
    parser.add_argument('inputs', nargs='+', help='images (segmentor) or '
                        'videos (recognizer)')
    parser.add_argument('--runtime', choices=RUNTIMES, default='ort')
    parser.add_argument('--threads', type=int, help='runtime threads')
    parser.add_argument('--out-dir', default='work_dirs/onnx_infer',
                        help='where a segmentor\'s drawings go')
    parser.add_argument('--topk', type=int, default=3,
                        help='classes printed per video')
    parser.add_argument('--config',
                        help='config to use instead of the file\'s own')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings')
    return parser.parse_args(argv)


def _pipeline(cfg) -> Compose:
    steps = cfg.get('test_pipeline') or \
        cfg.test_dataloader.dataset.pipeline
    return Compose([s for s in steps if s['type'] not in ANNOTATION_STEPS])


def segment(model, cfg, paths: List[str], out_dir: str) -> List[str]:
    """Predict every image; write the drawing and the label map of each.

    Returns:
        list[str]: The drawings written.
    """
    import mmcv
    from mmengine.registry import VISUALIZERS, init_default_scope
    init_default_scope('mmseg')
    pipeline = _pipeline(cfg)
    dataset = cfg.test_dataloader.dataset
    visualizer = VISUALIZERS.build(dict(
        cfg.visualizer, name=f'onnx_infer_{id(model)}', save_dir=None,
        vis_backends=None))
    visualizer.dataset_meta = dict(dataset.get('metainfo') or {})
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in paths:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} not found')
        sample = model.test_step(pseudo_collate(
            [pipeline(dict(img_path=path))]))[0]
        name = osp.splitext(osp.basename(path))[0]
        out_file = osp.join(out_dir, f'{name}.png')
        image = mmcv.imread(path, channel_order='rgb')
        visualizer.add_datasample(name, image, sample, draw_gt=False,
                                  show=False, out_file=out_file)
        labels = sample.pred_sem_seg.data[0].numpy().astype(np.uint8)
        mmcv.imwrite(labels, osp.join(out_dir, f'{name}_label.png'))
        classes = np.bincount(labels.ravel())
        shares = ', '.join(f'{c}: {100 * n / labels.size:.1f}%'
                           for c, n in enumerate(classes) if n)
        print(f'{path} -> {out_file} (label shares {shares})')
        written.append(out_file)
    return written


def recognize(model, cfg, paths: List[str], topk: int) -> List[np.ndarray]:
    """Classify every video; print its top classes. Returns the scores."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmaction')
    pipeline = _pipeline(cfg)
    scores = []
    for path in paths:
        if not osp.isfile(path):
            raise FileNotFoundError(f'video {path} not found')
        data = pipeline(dict(filename=path, label=-1, start_index=0,
                             modality='RGB'))
        sample = model.test_step(pseudo_collate([data]))[0]
        score = sample.pred_score.numpy().reshape(-1)
        best = np.argsort(-score)[:topk]
        print(f'{path}: ' + ', '.join(f'class {int(c)} {score[c]:.3f}'
                                      for c in best))
        scores.append(score)
    return scores


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    if not osp.isfile(args.model):
        raise FileNotFoundError(f'{args.model} not found')
    exported = ExportedModel(args.model, args.runtime, args.threads)
    cfg = config_of(exported, args.config, args.cfg_options)
    print(f'{args.model} ({describe(exported.metadata)}) on {args.runtime}')
    model = onnx_task_model(cfg, exported)
    if exported.metadata.get('task') == 'recognizer':
        return recognize(model, cfg, args.inputs, args.topk)
    return segment(model, cfg, args.inputs, args.out_dir)


if __name__ == '__main__':
    main()
