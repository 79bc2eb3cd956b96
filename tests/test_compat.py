"""Each compat fix: the problem it solves is solved, and nothing else."""
import pickle
import sys
import zipfile

import pytest
import torch

from mmdyt import compat


def test_mmseg_and_mmaction_models_import():
    import mmaction.models  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmseg.registry import MODELS
    assert MODELS.get('UPerHead') is not None


needs_lite = pytest.mark.skipif(
    'fix_mmcv_ext' not in compat.APPLIED,
    reason='a compiled mmcv is installed')


@needs_lite
def test_compiled_mmcv_op_raises_a_clear_error():
    # nms and roi_align are backed by torchvision (test_compat_ops.py);
    # every other compiled op keeps the clear error
    from mmcv.ops import soft_nms
    boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]])
    with pytest.raises(RuntimeError,
                       match=r'softnms.*mmcv._ext.*mmcv==2.1.0'):
        soft_nms(boxes, torch.tensor([0.9, 0.8]), 0.5)


@needs_lite
def test_pure_pytorch_mmcv_op_works():
    from mmcv.ops import point_sample
    feats = torch.arange(16.).reshape(1, 1, 4, 4)
    out = point_sample(feats, torch.tensor([[[0.5, 0.5]]]))
    assert out.shape == (1, 1, 1)
    assert torch.isfinite(out).all()


def test_missing_drn_raises_a_clear_error():
    if 'fix_mmaction_drn' not in compat.APPLIED:
        pytest.skip('this mmaction2 has its DRN')
    from mmaction.registry import MODELS
    # `_scope_` pins the registry: an earlier test may have left mmseg as
    # the default scope, which would send the build to mmseg's MODELS.
    with pytest.raises(RuntimeError, match='DRN.*2714'):
        MODELS.build(dict(type='DRN', _scope_='mmaction'))


def _train_toy_runner(work_dir, max_iters, resume=False):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.linear(inputs)
            return dict(loss=out.pow(2).mean()) if mode == 'loss' else out

    dataset = [dict(inputs=torch.randn(2)) for _ in range(8)]
    runner = Runner(
        model=Toy(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=dataset,
            batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        resume=resume,
        default_scope='mmengine')
    runner.train()
    return runner


def test_mmengine_checkpoint_loads_and_resumes(tmp_path):
    from mmengine.runner import load_checkpoint
    runner = _train_toy_runner(tmp_path, max_iters=2)
    path = tmp_path / 'iter_2.pth'
    # the message hub's HistoryBuffer and numpy arrays are inside
    with zipfile.ZipFile(path) as archive:
        pickled = b''.join(
            archive.read(name) for name in archive.namelist()
            if name.endswith('data.pkl'))
    assert b'HistoryBuffer' in pickled and b'numpy' in pickled
    checkpoint = load_checkpoint(runner.model, str(path))
    assert checkpoint['meta']['iter'] == 2
    resumed = _train_toy_runner(tmp_path, max_iters=4, resume=True)
    assert resumed.iter == 4
    assert (tmp_path / 'iter_4.pth').exists()


class _Sneaky:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_only_history_buffer_methods_are_reachable(tmp_path):
    if 'fix_torch_weights_only' not in compat.APPLIED:
        pytest.skip('this torch does not load with weights_only by default')
    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        torch.load(path)


def test_fixes_are_not_applied_twice():
    """A second apply_all() calls no fix that was applied already (each is
    replaced by one that fails if called) and keeps the stand-ins."""
    from unittest import mock
    before = list(compat.APPLIED)
    assert before  # these machines need at least the mmcv._ext stand-in
    stand_in = sys.modules.get('mmcv._ext')

    def must_not_run():
        raise AssertionError('a fix ran twice')

    patches = [mock.patch.object(compat, name, wraps=must_not_run)
               for name in before]
    for patch in patches:
        patch.start().__name__ = patch.attribute
    try:
        assert compat.apply_all() == before
    finally:
        for patch in patches:
            patch.stop()
    assert sys.modules.get('mmcv._ext') is stand_in
