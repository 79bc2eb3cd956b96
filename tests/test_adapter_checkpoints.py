"""Adapter-only checkpoints (``save_trainable_only=True``) and merging."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from helpers import REPO_ROOT, run_tool_here, seg_demo_env, work_dir_log
from mmdyt.models import DyTViT
from mmdyt.models.backbones.frozen_backbone import is_dyt_param
from mmdyt.models.backbones.frozen_backbone import adapter_only_entries
from merge_adapter_checkpoint import merge_adapter_checkpoint

TINY = dict(arch='tiny', img_size=32, patch_size=8, out_indices=(1, 3),
            out_type='raw')


def tiny_base(path):
    """A random ViT checkpoint (timm format) for ``TINY``, grid 4x4 -> a
    resampled pos-embed when loaded."""
    torch.manual_seed(1)
    base = DyTViT(**{**TINY, 'img_size': 16})
    weights = {k: v for k, v in base.state_dict().items()
               if not is_dyt_param(k)}
    torch.save(weights, path)
    return weights


def trained(model):
    """Give adapters and dispatchers non-initial values."""
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_adapter_only_ade20k_dyt_vit_b_holds_no_frozen_weight(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/ade20k/dyt_vitb.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.save_trainable_only = True
    model = MODELS.build(cfg.model)
    state_dict = model.state_dict()
    vit_params = sum(p.numel() for p in model.backbone.parameters())
    backbone = {k: v for k, v in state_dict.items()
                if k.startswith('backbone.')}
    assert backbone and all(is_dyt_param(k) for k in backbone)
    saved = sum(v.numel() for v in backbone.values())
    assert saved < 0.03 * vit_params  # 1.2M of 87M: 1.4%
    assert any(k.startswith('decode_head.') for k in state_dict)
    assert any(k.startswith('neck.') for k in state_dict)
    meta = adapter_only_entries(state_dict)['backbone']
    # all of ViT-B: cls, pos, patch embed (2), 12 blocks x 12 (no final norm)
    assert len(meta['frozen_keys']) == 148
    assert meta['base_checkpoint'] is None


def test_adapter_only_checkpoint_reloads_to_identical_outputs(tmp_path):
    base_path = str(tmp_path / 'base.pth')
    tiny_base(base_path)
    init_cfg = dict(type='Pretrained', checkpoint=base_path)
    model = DyTViT(**TINY, save_trainable_only=True, init_cfg=init_cfg)
    model.init_weights()
    trained(model)
    x = torch.randn(2, 3, 32, 32)
    expected = outputs(model, x)
    adapters = str(tmp_path / 'adapters.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), adapters)
    saved = torch.load(adapters)['state_dict']
    assert saved and all(is_dyt_param(k) for k in saved)

    # a fresh model (random ViT): its init_weights() reads init_cfg's base,
    # then mmengine's loader adds the adapters (no file read inside it)
    torch.manual_seed(3)
    fresh = DyTViT(**TINY, init_cfg=init_cfg)
    with pytest.raises(ValueError, match='Call init_weights'):
        load_checkpoint(fresh, adapters, strict=True)
    fresh.init_weights()
    load_checkpoint(fresh, adapters, strict=True)
    for got, want in zip(outputs(fresh, x), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    # merged: a full checkpoint that needs no base
    full = str(tmp_path / 'full.pth')
    counts = merge_adapter_checkpoint(adapters, full)
    assert counts['frozen'] == len(adapter_only_entries(saved)['']
                                   ['frozen_keys'])
    torch.manual_seed(4)
    plain = DyTViT(**TINY)
    load_checkpoint(plain, full, strict=True)
    for got, want in zip(outputs(plain, x), expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_adapter_only_checkpoint_needs_its_base(tmp_path):
    base_path = str(tmp_path / 'base.pth')
    weights = tiny_base(base_path)
    model = DyTViT(**TINY, save_trainable_only=True,
                   init_cfg=dict(type='Pretrained', checkpoint=base_path))
    model.init_weights()
    adapters = str(tmp_path / 'adapters.pth')
    torch.save(dict(state_dict=trained(model).state_dict()), adapters)

    with pytest.raises(ValueError, match="init_cfg=dict.type='Pretrained'"):
        load_checkpoint(DyTViT(**TINY), adapters)
    other = str(tmp_path / 'other.pth')
    torch.save({k: v + 0.01 for k, v in weights.items()}, other)
    wrong_base = DyTViT(**TINY,
                        init_cfg=dict(type='Pretrained', checkpoint=other))
    wrong_base.init_weights()
    with pytest.raises(ValueError, match='other frozen ViT weights'):
        load_checkpoint(wrong_base, adapters)
    with pytest.raises(ValueError, match='is not the ViT the adapters'):
        merge_adapter_checkpoint(adapters, str(tmp_path / 'x.pth'),
                                 base=other)
    with pytest.raises(ValueError, match='not an adapter-only checkpoint'):
        merge_adapter_checkpoint(base_path, str(tmp_path / 'x.pth'))


def test_save_trainable_only_needs_frozen():
    with pytest.raises(ValueError, match='needs frozen=True'):
        DyTViT(**TINY, frozen=False, save_trainable_only=True)


# ----------------------------------------------------- with mmengine's tools
CONFIG = osp.join(REPO_ROOT, 'configs/demo/seg_demo.py')


def test_train_resume_test_and_merge_with_the_demo_config(tmp_path):
    options = {
        **seg_demo_env(tmp_path, training=4, validation=2),
        'model.backbone.save_trainable_only': True,
        'train_dataloader.batch_size': 2,
        'default_hooks.checkpoint.interval': 2,
        'train_cfg.val_interval': 100,
    }
    work = tmp_path / 'work'
    run_tool_here('train.py', CONFIG, '--work-dir', str(work),
                  '--no-validate',
                  options={**options, 'train_cfg.max_iters': 2})
    checkpoint = work / 'iter_2.pth'
    state_dict = torch.load(checkpoint)['state_dict']
    assert not [k for k in state_dict
                if k.startswith('backbone.') and not is_dyt_param(k)]
    assert adapter_only_entries(state_dict)['backbone'][
        'base_checkpoint'] == str(tmp_path / 'vit.pth')

    run_tool_here('train.py', CONFIG, '--work-dir', str(work), '--resume',
                  '--no-validate',
                  options={**options, 'train_cfg.max_iters': 3})
    log = work_dir_log(work)
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'frozen ViT weights taken from the base' in log
    assert 'missing keys' not in log

    run_tool_here('test.py', CONFIG, str(checkpoint), '--work-dir',
                  str(tmp_path / 'test'), options=options)
    out = work_dir_log(tmp_path / 'test')
    assert 'frozen ViT weights taken from the base' in out
    assert 'missing keys' not in out and 'mIoU' in out

    # merged: the base's weights (the demo ViT's grid needs no resampling)
    # under backbone., the trained ones unchanged
    merged = str(tmp_path / 'full.pth')
    run_tool_here('model_converters/merge_adapter_checkpoint.py',
                  str(checkpoint), merged)
    full = torch.load(merged)['state_dict']
    base = torch.load(tmp_path / 'vit.pth')
    for key, value in state_dict.items():
        assert torch.equal(full[key], value)
    for key in adapter_only_entries(state_dict)['backbone']['frozen_keys']:
        assert torch.equal(full[f'backbone.{key}'], base[key])
    assert not adapter_only_entries(full)
