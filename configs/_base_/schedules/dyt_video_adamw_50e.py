# configs/_base_/schedules/dyt_video_adamw_12e.py for 50 epochs
# (Something-Something V2): 2 warm-up epochs, then half-cosine decay.
_base_ = ['./dyt_video_adamw_12e.py']
max_epochs = 50
warmup_epochs = 2
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
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
