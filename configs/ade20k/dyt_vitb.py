# DyT ViT-B/16 + UperNet on ADE20K, 512x512, 160k iterations at batch 16
# (8 GPUs x 2): the paper's recipe (docs/en/advanced_guides/method.md#training-recipes; the
# paper's Table 10: 46.90 mIoU), target activation rate 0.5, no
# distillation.
#   bash tools/dist_train.sh configs/ade20k/dyt_vitb.py 8
_base_ = [
    '../_base_/models/upernet_dyt_vitb.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/dyt_seg_160k.py',
]
crop_size = (512, 512)
num_classes = 150
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes),
    # single-scale sliding-window test (crop 512, stride 341)
    # crop_batch=None: the crops of a test batch go through the model
    # together (up to 8 of 512 x 512 per forward); 1 is mmseg's crop-by-crop
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341),
                  crop_batch=None))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
