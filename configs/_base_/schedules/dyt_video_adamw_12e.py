# The paper's video optimisation (docs/en/advanced_guides/method.md#training-recipes): AdamW,
# base lr 1e-3 scaled to 1e-3 x 128 / 256 = 5e-4 at batch 128 (8 GPUs x 16),
# weight decay 0.01, 2 warm-up epochs then half-cosine decay, AMP, no
# gradient clipping; 12 epochs (Kinetics-400). Weight decay applies to every
# trainable tensor, biases, LayerNorms and the head's query token included:
# the authors' public release builds one AdamW group of all trainable
# parameters (no paramwise_cfg here, so mmengine does the same).
max_epochs = 12
warmup_epochs = 2
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_begin=1,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# lr 5e-4 is for a total batch of 128; with another batch, set
# auto_scale_lr.enable=True (--cfg-options) to rescale it linearly
auto_scale_lr = dict(enable=False, base_batch_size=128)
custom_hooks = [
    dict(type='DispatchStatsHook'),
    dict(type='IterSeedHook'),  # exact resume: seeds every iteration
    dict(type='ParameterCountHook'),
]
