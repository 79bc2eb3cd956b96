"""Video on mmaction2: the pooling head, the recognizer, config swaps and the
Kinetics-400 / Something-Something V2 recipes."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import REPO_ROOT, train_and_test_step

TINY_ARCH = dict(
    embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def build_recognizer(model_cfg):
    init_default_scope('mmaction')
    from mmaction.registry import MODELS
    return MODELS.build(model_cfg)


def video_batch(shape, num_classes, batch=1):
    """``batch`` uint8 clips of ``shape`` (views, C, T, H, W) with labels."""
    from mmaction.structures import ActionDataSample
    return dict(
        inputs=[
            torch.randint(0, 256, shape, dtype=torch.uint8)
            for _ in range(batch)
        ],
        data_samples=[
            ActionDataSample().set_gt_label(i % num_classes)
            for i in range(batch)
        ])


def tiny_model_cfg(**dyt_loss):
    return dict(
        type='DyTRecognizer3D',
        backbone=dict(
            type='DyTViT',
            arch=TINY_ARCH,
            img_size=32,
            patch_size=8,
            out_type='raw',
            final_norm=True,
            adapter_cfg=dict(type='Adapter', bottleneck=8, dropout=0.)),
        cls_head=dict(
            type='AttentivePoolHead',
            num_classes=5,
            in_channels=32,
            num_heads=2,
            dropout_ratio=0.,
            average_clips='score'),
        data_preprocessor=dict(
            type='ActionDataPreprocessor',
            mean=[127.5] * 3,
            std=[127.5] * 3,
            format_shape='NCTHW'),
        dyt_loss=dyt_loss)


# --------------------------------------------------------------- the head
def make_head(**kwargs):
    from mmdyt.models.heads import AttentivePoolHead
    return AttentivePoolHead(num_classes=5, in_channels=32, num_heads=4,
                             dropout_ratio=0., **kwargs)


def test_head_init_and_output_shape():
    head = make_head()
    assert head.query_token.abs().max() == 0  # zero-initialised query
    tokens = torch.randn(3, 8, 17, 32)  # (N, T, L, C): DyTViT 'raw'
    assert head((tokens, )).shape == (3, 5)
    assert head(tokens).shape == (3, 5)
    assert head(tokens[:, 0]).shape == (3, 5)  # (N, L, C): one frame
    with pytest.raises(ValueError, match='expects tokens'):
        head(torch.randn(3, 8, 17, 16))


def test_head_attends_to_every_frame_and_cls_token():
    head = make_head().eval()
    tokens = torch.randn(2, 8, 17, 32)
    reference = head.pool(tokens)  # the (N, C) clip feature
    for frame, token in [(0, 5), (7, 16), (3, 0)]:  # (3, 0): a cls token
        changed = tokens.clone()
        changed[:, frame, token] = torch.randn(32)
        difference = (head.pool(changed) - reference).abs().max(-1).values
        assert (difference > 1e-4).all(), (frame, token)


def test_head_gradients_reach_every_parameter():
    head = make_head()
    tokens = torch.randn(2, 8, 17, 32)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
    head(tokens).square().sum().backward()
    # the zero query gives uniform attention: only the query's own path,
    # values, projection and classifier have gradients at first ...
    for name, param in head.named_parameters():
        moved = param.grad is not None and param.grad.abs().sum() > 0
        assert moved == (name.split('.')[0] in ('query_token', 'v', 'norm_v',
                                                'proj', 'fc_cls')
                         or name in ('q.bias', 'norm_q.bias')), name
    optimizer.step()
    optimizer.zero_grad()
    head(tokens).square().sum().backward()
    for name, param in head.named_parameters():  # ... then all of them
        assert param.grad.abs().sum() > 0, name


def test_head_pools_a_set_of_frames():
    """Like the paper's, the head sees no frame order: a clip and its time
    reversal get the same scores."""
    head = make_head().eval()
    tokens = torch.randn(2, 8, 17, 32)
    assert torch.allclose(head(tokens), head(tokens.flip(1)), atol=1e-5)


# --------------------------------------------------------- the recognizer
def test_distillation_vanishes_when_every_token_is_computed():
    model = build_recognizer(tiny_model_cfg(distill=True)).train()
    for layer in (model.cls_head.proj, model.cls_head.fc_cls):
        torch.nn.init.normal_(layer.weight)  # confident logits
    for block in model.backbone.blocks:  # MLPs that change the tokens
        torch.nn.init.normal_(block.mlp.fc2.weight, std=0.5)
    data = model.data_preprocessor(
        video_batch((1, 3, 4, 32, 32), num_classes=5, batch=2), True)
    for dispatcher in model.backbone.dispatchers():
        torch.nn.init.constant_(dispatcher.linear.bias, 100.)
    losses = model.loss(**data)
    assert {'loss_cls', 'loss_rate', 'act_rate', 'loss_distill',
            'complete.loss_cls'} <= set(losses)
    assert losses['act_rate'] == 1
    assert losses['loss_rate'].item() == pytest.approx(2 * 0.5**2)
    assert losses['loss_distill'].item() == pytest.approx(0, abs=1e-6)
    assert losses['complete.loss_cls'].item() == pytest.approx(
        losses['loss_cls'].item(), abs=1e-5)

    for dispatcher in model.backbone.dispatchers():  # now skip every token
        torch.nn.init.constant_(dispatcher.linear.bias, -100.)
    losses = model.loss(**data)
    assert losses['act_rate'] == 0
    assert losses['loss_distill'] > 1e-4
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is not None for n, p in model.named_parameters()
               if p.requires_grad and '_dispatcher.' in n)


def test_max_testing_views_gives_the_scores_of_all_views_at_once():
    """mmaction2's ``max_testing_views`` runs the views in chunks; the
    scores equal those of one pass over every view, and the DyT
    statistics count every chunk."""
    from mmdyt.engine import RateMeter
    cfg = tiny_model_cfg()
    model = build_recognizer(cfg).eval()
    chunked_cfg = dict(cfg, test_cfg=dict(max_testing_views=2))
    chunked = build_recognizer(chunked_cfg).eval()
    chunked.load_state_dict(model.state_dict())
    data = video_batch((5, 3, 2, 32, 32), num_classes=5)  # 5 views
    with torch.no_grad():
        whole = model.test_step(data)[0].pred_score
        with RateMeter(chunked.backbone) as meter:
            parts = chunked.test_step(data)[0].pred_score
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    assert meter.num_forwards == 3  # views 2 + 2 + 1
    assert meter.num_images == 5 * 2  # every frame of every view


def test_recognizer_checks_its_arguments():
    cfg = tiny_model_cfg(distill=True)
    cfg['backbone']['dispatch'] = None
    with pytest.raises(ValueError, match='distill=True needs token'):
        build_recognizer(cfg)
    cfg = tiny_model_cfg()
    cfg['backbone']['dispatch'] = None  # the adapter-only baseline
    model = build_recognizer(cfg)
    losses = model.loss(**model.data_preprocessor(
        video_batch((1, 3, 4, 32, 32), num_classes=5), True))
    assert set(losses) == {'loss_cls', 'top1_acc', 'top5_acc'}
    with pytest.raises(ValueError, match='complete=True is for the training'):
        model.extract_feat(torch.zeros(1, 1, 3, 4, 32, 32), test_mode=True,
                           complete=True)


# ------------------------------------------------ mmaction2's own configs
def test_swap_into_mmaction_videomae_config(tmp_path):
    """mmaction2's VideoMAE ViT-B config, made DyT in a few lines."""
    config = tmp_path / 'dyt_swap.py'
    config.write_text("""
_base_ = 'mmaction::recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py'
custom_imports = dict(imports=['mmdyt'])
model = dict(
    type='DyTRecognizer3D',
    backbone=dict(_delete_=True, type='DyTViT', arch='base', out_type='raw',
                  final_norm=True),
    cls_head=dict(_delete_=True, type='AttentivePoolHead', num_classes=400,
                  in_channels=768, average_clips='prob'),
    dyt_loss=dict(target_rate=0.5, distill=True))
""")  # noqa: E501
    cfg = Config.fromfile(str(config))
    assert cfg.model.data_preprocessor.format_shape == 'NCTHW'  # theirs
    model = build_recognizer(cfg.model)
    trainable = {n for n, p in model.backbone.named_parameters()
                 if p.requires_grad}
    assert trainable and all('_adapter.' in n or '_dispatcher.' in n
                             for n in trainable)
    # small clips keep the test fast: the pos-embed is resampled to 32x32
    log_vars, predictions = train_and_test_step(
        model, video_batch((1, 3, 2, 32, 32), 400, batch=2),
        video_batch((2, 3, 2, 32, 32), 400, batch=2))  # 2 views
    assert {'loss_cls', 'loss_rate', 'loss_distill',
            'complete.loss_cls'} <= set(log_vars)
    assert 0 < log_vars['act_rate'] < 1  # untrained: some tokens skipped
    assert predictions[0].pred_score.shape == (400, )
    assert predictions[0].pred_score.sum().item() == pytest.approx(1, 1e-4)


@pytest.mark.parametrize('name,num_classes', [
    ('kinetics400/dyt_vitb_8x224.py', 400),
    ('sthv2/dyt_vitb_8x224.py', 174),
])
def test_video_recipe_runs_on_cpu(name, num_classes):
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/{name}'))
    assert cfg.model.backbone.arch == 'base'
    assert cfg.model.dyt_loss.distill and cfg.model.dyt_loss.target_rate == .5
    assert cfg.optim_wrapper.optimizer.lr == 5e-4
    assert cfg.model.cls_head.in_channels == 768
    # the recipe's model, tiny: 8 frames of 32x32, a 2-block ViT
    cfg.model.backbone.update(init_cfg=None, arch=TINY_ARCH, img_size=32,
                              patch_size=8)
    cfg.model.cls_head.update(in_channels=32, num_heads=2)
    model = build_recognizer(cfg.model)
    log_vars, predictions = train_and_test_step(
        model, video_batch((1, 3, 8, 32, 32), num_classes),
        video_batch((3, 3, 8, 32, 32), num_classes))  # 3 views
    assert {'loss_cls', 'loss_rate', 'loss_distill', 'complete.loss_cls',
            'act_rate'} <= set(log_vars)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log_vars.values())
    assert predictions[0].pred_score.shape == (num_classes, )
    assert model.backbone.dispatch_masks[0].shape == (3 * 8, 16)


@pytest.mark.parametrize('name', [
    'kinetics400/vitb_adapter_8x224.py', 'kinetics400/dyt_vitb_moe_8x224.py',
    'sthv2/vitb_adapter_8x224.py', 'demo/video_demo_adapter.py'
])
def test_other_video_recipes_build(name):
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/{name}'))
    cfg.model.backbone.update(init_cfg=None, arch=TINY_ARCH, img_size=32)
    cfg.model.cls_head.update(in_channels=32, num_heads=2)
    model = build_recognizer(cfg.model)
    assert type(model).__name__ == cfg.model.type
    log_vars, _ = train_and_test_step(
        model, video_batch((1, 3, 2, 32, 32), 10),
        video_batch((3, 3, 2, 32, 32), 10))
    assert ('loss_rate' in log_vars) == (cfg.model.backbone.dispatch
                                         is not None)


def test_video_pipelines_run_on_a_generated_clip(tmp_path):
    """The recipes' train and test pipelines on a real mp4 (K400: 3 temporal
    views; SSv2: RandAugment, 3 spatial views), decoded with OpenCV."""
    from mmaction.registry import TRANSFORMS
    from mmengine.dataset import Compose

    from video_demo_data import make_clip, write_clip
    init_default_scope('mmaction')
    import numpy as np
    path = str(tmp_path / 'clip.mp4')
    frames = make_clip(np.random.RandomState(0), 1, size=96, num_frames=40)
    write_clip(path, [np.ascontiguousarray(f[:80]) for f in frames])

    def opencv(pipeline):  # the documented decord-free variant
        swap = dict(DecordInit='OpenCVInit', DecordDecode='OpenCVDecode')
        return Compose([
            TRANSFORMS.build(dict(t, type=swap.get(t['type'], t['type'])))
            for t in pipeline
        ])

    for name, test_shape in [('kinetics400_8x16x1.py', (3, 3, 8, 224, 224)),
                             ('sthv2_u8.py', (3, 3, 8, 224, 224))]:
        cfg = Config.fromfile(
            osp.join(REPO_ROOT, 'configs/_base_/datasets', name))
        info = dict(filename=path, label=1, start_index=0, modality='RGB')
        train = opencv(cfg.train_pipeline)(dict(info))
        assert train['inputs'].shape == (1, 3, 8, 224, 224), name
        test = opencv(cfg.test_pipeline)(dict(info))
        assert test['inputs'].shape == test_shape, name


def test_sthv2_randaugment_is_the_papers_policy_on_every_frame_alike():
    """rand-m7-n4: 4 ops at magnitude 7 of 10, the same ops for every frame
    of a clip (so motion is not destroyed)."""
    from mmaction.registry import TRANSFORMS
    init_default_scope('mmaction')
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/_base_/datasets/sthv2_u8.py'))
    step = [t for t in cfg.train_pipeline if t.get('op') == 'RandAugment']
    assert len(step) == 1
    assert (step[0].num_ops, step[0].magnitude,
            step[0].num_magnitude_bins) == (4, 7, 11)
    augment = TRANSFORMS.build(step[0])
    import numpy as np
    rng = np.random.RandomState(0)
    frame = rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        out = augment(dict(imgs=[frame.copy() for _ in range(8)]))['imgs']
        assert all(np.array_equal(out[0], f) for f in out[1:])
        assert out[0].shape == frame.shape and out[0].dtype == np.uint8
        changed += not np.array_equal(out[0], frame)
    assert changed >= 4  # 4 ops rarely leave a clip as it was


@pytest.mark.parametrize('name', [
    'kinetics400/dyt_vitb_8x224.py', 'sthv2/dyt_vitb_8x224.py',
    'kinetics400/vitb_adapter_8x224.py'
])
def test_video_recipes_decay_every_trainable_tensor(name):
    """As the authors' release: no head dropout, one weight-decay group of
    every trainable tensor (biases, norms and the query token too)."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(REPO_ROOT, f'configs/{name}'))
    assert cfg.model.cls_head.dropout_ratio == 0
    assert 'paramwise_cfg' not in cfg.optim_wrapper
    cfg.model.backbone.update(init_cfg=None, arch=TINY_ARCH, img_size=32)
    cfg.model.cls_head.update(in_channels=32, num_heads=2)
    model = build_recognizer(cfg.model)
    optim = dict(cfg.optim_wrapper, type='OptimWrapper')  # no GPU here
    groups = build_optim_wrapper(model, optim).optimizer.param_groups
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    # mmengine hands frozen tensors to the optimiser too; they get no grad
    decayed = {id(p) for g in groups if g['weight_decay'] == 0.01
               for p in g['params']}
    undecayed = {id(p) for g in groups if g['weight_decay'] != 0.01
                 for p in g['params']}
    assert trainable <= decayed and not trainable & undecayed
    assert id(model.cls_head.query_token) in decayed
