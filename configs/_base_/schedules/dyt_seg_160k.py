# The paper's segmentation optimisation (docs/en/advanced_guides/method.md#training-recipes):
# AdamW lr 1e-3, wd 0.05, 1500-iteration linear warm-up then poly (power 1)
# decay. (The paper says cosine; the authors' public release uses poly.
# We follow the release: docs/en/advanced_guides/method.md, "Choices mmdyt makes where the paper
# is silent".)
# Mixed precision: mmdyt trains with AMP (AmpOptimWrapper, float16 with
# loss scaling on GPUs), as the paper says its experiments run. The authors'
# public release trains segmentation in float32 (its fp16 switch is off);
# for that, set optim_wrapper.type='OptimWrapper'. On the demo, bfloat16
# and float32 agree on 99.9% of the dispatch decisions
# (tools/analysis_tools/amp_agreement.py).
max_iters = 160000
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=max_iters)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=16000,
        max_keep_ckpts=3))
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
