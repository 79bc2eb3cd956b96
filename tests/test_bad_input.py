"""Bad input fails loudly and says what is wrong (or, for one bad training
image, is skipped with a warning): never a silent wrong result."""
import logging
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT, run_tool_here
from mmdyt.models import DyTViT, TokenDispatcher
from mmdyt.models.backbones.checkpoint_loading import (check_checkpoint_file,
                                                       read_state_dict)

TINY = dict(arch='tiny', img_size=32)


# ------------------------------------------------------------ config typos
@pytest.mark.parametrize('kwargs, match', [
    (dict(dispach='mlp'), r"DyTViT got an unknown argument 'dispach' "
     r"\(did you mean 'dispatch'\?\)"),
    (dict(adapter_cfg=dict(type='Adapter', bottlenek=8)),
     r"adapter_cfg \(Adapter\) got an unknown argument 'bottlenek' \(did "
     r"you mean 'bottleneck'\?\)"),
    (dict(adapter_cfg=dict(bottlenek=8)), r"'bottlenek' \(did you mean"),
    (dict(adapter_cfg=dict(type='MoEAdapter', num_expert=4)),
     r"\(MoEAdapter\) got an unknown argument 'num_expert' \(did you mean "
     r"'num_experts'\?\)"),
    (dict(adapter_cfg=dict(type='Adaptor')),
     r"adapter_cfg got an unknown type 'Adaptor' \(did you mean "
     r"'Adapter'\?\)"),
    (dict(dispatcher_cfg=dict(tua=1.0)),
     r"dispatcher_cfg \(TokenDispatcher\) got an unknown argument 'tua' "
     r"\(did you mean 'tau'\?\)"),
    (dict(out_typ='raw', frozem=False), r"unknown arguments 'out_typ' \(did "
     r"you mean 'out_type'\?\), 'frozem' \(did you mean 'frozen'\?\)"),
])
def test_config_typos_name_the_argument_and_the_fix(kwargs, match):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    with pytest.raises(TypeError, match=match):
        MODELS.build(dict(type='DyTViT', **TINY, **kwargs))


def test_dispatcher_typo():
    with pytest.raises(TypeError, match=r"'treshold' \(did you mean "
                       r"'threshold'\?\)"):
        TokenDispatcher(8, treshold=0.6)


def test_dyt_loss_typo():
    from mmdyt.models.losses import build_dyt_loss
    with pytest.raises(TypeError, match=r"DyTLoss got an unknown argument "
                       r"'target_rat' \(did you mean 'target_rate'\?\)"):
        build_dyt_loss('DyTEncoderDecoder', DyTViT(**TINY),
                       dict(target_rat=0.5))


@pytest.mark.parametrize('scope, cfg, match', [
    # through **kwargs to mmseg's EncoderDecoder
    ('mmseg', dict(type='DyTEncoderDecoder', backbone=dict(type='DyTViT'),
                   decode_haed=dict()),
     r"DyTEncoderDecoder got an unknown argument 'decode_haed' \(did you "
     r"mean 'decode_head'\?\)"),
    ('mmaction', dict(type='DyTRecognizer3D', backbone=dict(type='DyTViT'),
                      cls_haed=dict()),
     r"'cls_haed' \(did you mean 'cls_head'\?\)"),
    # through **kwargs to mmaction2's BaseHead
    ('mmaction', dict(type='AttentivePoolHead', num_classes=3,
                      in_channels=8, average_clip=dict(type='score')),
     r"AttentivePoolHead got an unknown argument 'average_clip' \(did you "
     r"mean 'average_clips'\?\)"),
])
def test_model_typos_name_the_argument_and_the_fix(scope, cfg, match):
    from mmengine.registry import MODELS
    init_default_scope(scope)
    with pytest.raises(TypeError, match=match):
        MODELS.build(cfg)


def test_dyt_block_typo():
    from mmdyt.models import DyTBlock
    with pytest.raises(TypeError, match=r"'dispatch_cfg' \(did you mean "
                       r"'dispatcher_cfg'\?\)"):
        DyTBlock(8, 2, dispatch_cfg=dict())


def test_unrelated_names_get_no_suggestion():
    with pytest.raises(TypeError) as error:
        DyTViT(**TINY, xyz=1)
    assert 'did you mean' not in str(error.value)
    assert "unknown argument 'xyz'; valid arguments: adapter_cfg" in str(
        error.value)


# --------------------------------------------------- damaged checkpoints
@pytest.fixture
def damaged_checkpoints(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'w': torch.zeros(100000)}, path)
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    files = {
        'empty': b'',
        'truncated': data[:len(data) // 2],
        'not a checkpoint': b'hello' * 100,
        'bit flip': bytes(flipped),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / (name.replace(' ', '_') + '.pth')
        paths[name].write_bytes(content)
    return path, paths


def test_damaged_checkpoints_raise_naming_the_file(damaged_checkpoints):
    good, paths = damaged_checkpoints
    check_checkpoint_file(str(good))
    assert torch.equal(read_state_dict(str(good))['w'], torch.zeros(100000))
    messages = {
        'empty': 'is empty',
        'truncated': 'it is corrupt, truncated or not a PyTorch checkpoint',
        'not a checkpoint': 'cannot read checkpoint',
        # torch.load itself loads this one silently, one value changed
        'bit flip': 'does not match its checksum',
    }
    for name, path in paths.items():
        with pytest.raises(ValueError, match=messages[name]) as error:
            read_state_dict(str(path))
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError):
        read_state_dict(str(good) + '.missing')


def test_tools_refuse_a_damaged_checkpoint(damaged_checkpoints, tmp_path):
    """``tools/train.py --resume`` (the latest checkpoint of the work
    directory, as after a crash during a save) and ``tools/test.py``."""
    _, paths = damaged_checkpoints
    config = osp.join(REPO_ROOT, 'configs/demo/seg_demo.py')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_4.pth').write_bytes(paths['truncated'].read_bytes())
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    with pytest.raises(ValueError) as error:
        run_tool_here('train.py', config, '--work-dir', str(work), '--resume')
    assert str(error.value).startswith(
        f'cannot read checkpoint {work / "iter_4.pth"}: it is corrupt, '
        'truncated')
    with pytest.raises(ValueError, match='does not match its checksum'):
        run_tool_here('test.py', config, str(paths['bit flip']))


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_inputs(value):
    model = DyTViT(**TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    x[1, 2, 5, 7] = value
    with pytest.raises(ValueError, match=r'has 1 NaN or infinite values'):
        model(x)
    with pytest.raises(ValueError, match='NaN or infinite'):
        model(x[:, :, None].expand(-1, -1, 2, -1, -1))  # video


def test_finite_check_reads_back_only_on_the_cpu():
    """The NaN/Inf check reads a value back from the device: by default
    only for CPU inputs (no stream to stall), on request everywhere."""
    on_gpu = torch.empty(1, 3, 32, 32, device='meta')  # any non-CPU device
    assert DyTViT(**TINY)._should_check_finite(torch.zeros(1, 3, 32, 32))
    assert not DyTViT(**TINY)._should_check_finite(on_gpu)
    assert DyTViT(**TINY, check_finite=True)._should_check_finite(on_gpu)
    x = torch.full((1, 3, 32, 32), float('nan'))
    with torch.no_grad():
        out = DyTViT(**TINY, check_finite=False).eval()(x)[0]
    assert out.isnan().all()  # not checked: NaN in, NaN out


def test_image_smaller_than_a_patch():
    with pytest.raises(ValueError, match='not a positive multiple of the '
                       'patch size 16'):
        DyTViT(**TINY)(torch.randn(1, 3, 8, 8))


# -------------------------------------------------- unreadable images
@pytest.fixture
def seg_data_with_bad_images(tmp_path):
    from seg_demo_data import make_seg_demo
    root = tmp_path / 'seg'
    make_seg_demo(str(root), splits=dict(training=4, validation=2))
    images = root / 'images' / 'training'
    (images / 'demo_training_00001.jpg').write_bytes(b'')  # zero bytes
    corrupt = images / 'demo_training_00002.jpg'
    corrupt.write_bytes(corrupt.read_bytes()[:300])  # cut short
    (root / 'images' / 'validation' / 'demo_validation_00001.jpg'
     ).write_bytes(b'\x00' * 64)  # not an image
    return root


def demo_dataset(root, split):
    """The demo config's dataset of ``split`` over ``root``, with the
    config's own pipeline (CheckedLoadImageFromFile with ``on_error='skip'``
    in training, CheckImageFile before LoadImageFromFile in testing)."""
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/demo/seg_demo.py'))
    pipeline = cfg.train_pipeline if split == 'training' else \
        cfg.test_pipeline
    assert pipeline[0]['type'] == ('CheckedLoadImageFromFile' if split ==
                                   'training' else 'CheckImageFile')
    return DATASETS.build(dict(
        type='BaseSegDataset', data_root=str(root),
        data_prefix=dict(img_path=f'images/{split}',
                         seg_map_path=f'annotations/{split}'),
        img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
        pipeline=pipeline))


def test_training_skips_an_unreadable_image_with_a_warning(
        seg_data_with_bad_images):
    dataset = demo_dataset(seg_data_with_bad_images, 'training')
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        samples = [dataset[i] for i in range(len(dataset))]
    finally:
        logger.removeHandler(handler)
    names = [osp.basename(s['data_samples'].img_path) for s in samples]
    assert 'demo_training_00001.jpg' not in names  # replaced ...
    assert 'demo_training_00002.jpg' not in names
    assert 'demo_training_00000.jpg' in names
    assert all(s['inputs'].shape == (3, 96, 96) for s in samples)
    log = '\n'.join(r.getMessage() for r in records)  # ... and said so
    assert 'Skipped unreadable image' in log
    assert 'demo_training_00001.jpg: the file is empty (0 bytes)' in log
    assert 'demo_training_00002.jpg: the JPEG is truncated' in log


def test_testing_stops_at_an_unreadable_image(seg_data_with_bad_images):
    dataset = demo_dataset(seg_data_with_bad_images, 'validation')
    dataset[0]
    with pytest.raises(ValueError, match=r'unreadable image .*demo_validati'
                       r'on_00001\.jpg: it cannot be decoded as an image'):
        dataset[1]


@pytest.mark.parametrize('name, data, problem', [
    ('empty.jpg', b'', 'the file is empty'),
    ('cut.jpg', None, 'the JPEG is truncated'),
    ('noise.jpg', b'\x00' * 64, 'cannot be decoded as an image'),
])
def test_check_image_file(tmp_path, name, data, problem):
    import cv2
    import numpy as np
    from mmdyt.datasets import CheckImageFile
    good = tmp_path / 'good.jpg'
    cv2.imwrite(str(good), np.full((8, 8, 3), 100, np.uint8))
    assert CheckImageFile()(dict(img_path=str(good))) == dict(
        img_path=str(good))
    path = tmp_path / name
    path.write_bytes(good.read_bytes()[:-50] if data is None else data)
    with pytest.raises(ValueError, match=f'unreadable image {path}: .*'
                       f'{problem}'):
        CheckImageFile()(dict(img_path=str(path)))
    # arrays from an inferencer: nothing to check
    array = dict(img=np.zeros((8, 8, 3), np.uint8), img_path=None)
    assert CheckImageFile()(array) is array


def test_on_error_is_checked():
    from mmdyt.datasets import CheckedLoadImageFromFile
    with pytest.raises(ValueError, match="on_error must be one of"):
        CheckedLoadImageFromFile(on_error='ignore')
