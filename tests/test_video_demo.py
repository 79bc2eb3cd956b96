"""The video demo: generated clips, decoding without decord, resume."""
import copy
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT, load_tool, run_tool_here, tensors_equal

DEMO_CONFIG = osp.join(REPO_ROOT, 'configs/demo/video_demo.py')
SPLITS = {'train': 8, 'val': 4}


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    """A small generated dataset in the demo's layout."""
    from video_demo_data import make_video_demo
    root = str(tmp_path_factory.mktemp('video'))
    assert make_video_demo(root, splits=SPLITS, size=32) == SPLITS
    return root


def read_list(root, split):
    with open(osp.join(root, f'{split}.txt')) as f:
        return [line.split() for line in f]


def test_generated_clips_and_lists(clips):
    from video_demo_data import CLASSES, make_video_demo
    for split, count in SPLITS.items():
        lines = read_list(clips, split)
        assert len(lines) == count
        assert sorted({int(label) for _, label in lines}) == list(
            range(len(CLASSES)))  # balanced: every class present
        assert all(osp.isfile(osp.join(clips, split, name))
                   for name, _ in lines)
    # complete splits are kept, an incomplete one is written again
    video = osp.join(clips, 'train', 'clip_00000.mp4')
    mtime = os.stat(video).st_mtime_ns
    make_video_demo(clips, splits=SPLITS, size=32)
    assert os.stat(video).st_mtime_ns == mtime
    os.remove(osp.join(clips, 'val', 'clip_00001.mp4'))
    make_video_demo(clips, splits=SPLITS, size=32)
    assert osp.isfile(osp.join(clips, 'val', 'clip_00001.mp4'))


def test_clip_class_needs_several_frames(monkeypatch):
    """Every frame shows one moving shape, whose kind belongs to two classes;
    the frames together show both kinds of the class."""
    import video_demo_data as video_data
    for label, pair in enumerate(video_data.PAIRS):
        assert sum(pair[0] in p for p in video_data.PAIRS) == 2
        calls = []
        monkeypatch.setattr(video_data, '_draw_shape',
                            lambda *args: calls.append(args[1:4]))
        frames = video_data.make_clip(
            np.random.RandomState(label), label, size=64, num_frames=24)
        assert len(frames) == len(calls) == 24  # one shape per frame
        kinds = [kind for kind, _, _ in calls]
        assert kinds[:12] == [kinds[0]] * 12 and kinds[12:] == [kinds[-1]] * 12
        assert sorted(kinds[::12]) == sorted(pair)  # one after the other
        centers = [center for _, center, _ in calls[:12]]
        assert len(set(centers)) == 12  # it moves every frame
    with pytest.raises(ValueError, match='label must be in 0..3'):
        video_data.make_clip(np.random.RandomState(0), 4)


def test_clips_decode_with_opencv_without_decord(clips, monkeypatch):
    """The demo's pipelines decode the mp4s through OpenCV only."""
    import mmcv
    from mmaction.registry import TRANSFORMS
    from mmengine.config import Config
    from mmengine.dataset import Compose
    monkeypatch.setitem(sys.modules, 'decord', None)  # import decord fails
    init_default_scope('mmaction')
    cfg = Config.fromfile(DEMO_CONFIG)
    name, label = read_list(clips, 'val')[0]
    path = osp.join(clips, 'val', name)
    reader = mmcv.VideoReader(path)
    assert len(reader) == 24 and reader.resolution == (32, 32)
    for pipeline, views in [(cfg.train_pipeline, 1), (cfg.test_pipeline, 2)]:
        assert pipeline[0]['type'] == 'OpenCVInit'
        packed = Compose([TRANSFORMS.build(t) for t in pipeline])(
            dict(filename=path, label=int(label), start_index=0,
                 modality='RGB'))
        assert packed['inputs'].shape == (views, 3, cfg.clip_len, 32, 32)
        assert packed['data_samples'].gt_label.item() == int(label)


def test_opencv_and_decord_decode_the_same_frames(clips):
    decord = pytest.importorskip('decord')
    import mmcv
    path = osp.join(clips, 'train', 'clip_00001.mp4')
    with_opencv = np.stack([frame[..., ::-1] for frame in  # BGR -> RGB
                            mmcv.VideoReader(path)])
    with_decord = decord.VideoReader(path).get_batch(list(range(24)))
    assert np.array_equal(with_decord.asnumpy(), with_opencv)


# ------------------------------------------------------------------ resume
class _Snapshot(Hook):
    """Records the state a run starts its first iteration from."""

    def __init__(self):
        self.state = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.state is None:
            self.state = dict(
                iter=runner.iter,
                model={k: v.clone()
                       for k, v in runner.model.state_dict().items()},
                optimizer=copy.deepcopy(runner.optim_wrapper.state_dict()))


def _train(work_dir, clips, vit, max_iters, resume=False):
    """``tools/train.py`` (its ``main``, with ``--resume``) on a tiny demo
    run; returns the state the run started its first iteration from."""
    tool = load_tool('train.py')
    snapshot = _Snapshot()

    def build_runner(cfg):
        runner = build_runner.original(cfg)
        runner.register_hook(snapshot)
        return runner

    build_runner.original = tool.build_runner
    tool.build_runner = build_runner
    options = {
        'model.backbone.init_cfg.checkpoint': vit,
        'model.backbone.img_size': 32,
        'train_dataloader.dataset.ann_file': osp.join(clips, 'train.txt'),
        'train_dataloader.dataset.data_prefix.video': osp.join(
            clips, 'train'),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
    }
    run_tool_here('train.py', DEMO_CONFIG, '--work-dir', str(work_dir),
                  '--no-validate', *['--resume'] * resume, options=options,
                  module=tool)
    return snapshot


def test_resume_continues_where_the_run_stopped(clips, tmp_path):
    from demo_vit import build_demo_vit
    vit = str(tmp_path / 'demo_vit.pth')
    torch.save(build_demo_vit().state_dict(), vit)
    # an uninterrupted run of 4 iterations, and one stopped after 2
    _train(tmp_path / 'full', clips, vit, max_iters=4)
    _train(tmp_path / 'stopped', clips, vit, max_iters=2)
    full_2 = torch.load(tmp_path / 'full' / 'iter_2.pth')
    stopped_2 = torch.load(tmp_path / 'stopped' / 'iter_2.pth')
    tensors_equal(full_2['state_dict'], stopped_2['state_dict'])
    tensors_equal(full_2['optimizer'], stopped_2['optimizer'])
    assert any('_dispatcher.' in k for k in full_2['state_dict'])

    # --resume: the next iteration is the 3rd, from the uninterrupted run's
    # parameters (dispatchers included) and optimizer state after 2
    resumed = _train(tmp_path / 'stopped', clips, vit, max_iters=4,
                     resume=True)
    assert resumed.state['iter'] == 2
    tensors_equal(resumed.state['model'], full_2['state_dict'])
    tensors_equal(resumed.state['optimizer'], full_2['optimizer'])
    full_4 = torch.load(tmp_path / 'full' / 'iter_4.pth')
    resumed_4 = torch.load(tmp_path / 'stopped' / 'iter_4.pth')
    assert resumed_4['meta']['iter'] == full_4['meta']['iter'] == 4
    steps = [{int(s['step']) for s in c['optimizer']['state'].values()}
             for c in (full_4, resumed_4)]
    assert steps[0] == steps[1] == {4}  # every parameter: 4 AdamW steps
    tensors_equal(full_4['param_schedulers'], resumed_4['param_schedulers'])
    # the same weights as the uninterrupted run: same clips, same Gumbel
    # noise and dropout (IterSeedHook)
    tensors_equal(full_4['state_dict'], resumed_4['state_dict'])
    tensors_equal(full_4['optimizer'], resumed_4['optimizer'])
