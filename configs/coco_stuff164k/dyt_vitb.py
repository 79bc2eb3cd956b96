# DyT ViT-B/16 + UperNet on COCO-Stuff-164k, 512x512, 80k iterations at
# batch 16 (8 GPUs x 2): the paper's recipe (Table 10), target rate 0.5.
_base_ = [
    '../_base_/models/upernet_dyt_vitb.py',
    'mmseg::_base_/datasets/coco-stuff164k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/dyt_seg_160k.py',
]
crop_size = (512, 512)
num_classes = 171
max_iters = 80000
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
    # crop_batch=None: the crops of a test batch go through the model
    # together (up to 8 of 512 x 512 per forward); 1 is mmseg's crop-by-crop
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341),
                  crop_batch=None))
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
train_cfg = dict(max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
