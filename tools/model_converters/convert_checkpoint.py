"""Convert an mmseg / mmpretrain / MAE / VideoMAE ViT checkpoint for DyTViT.

DyTViT loads timm-format ViT weights; this writes them from the other
layouts (see ``vit_layouts.py`` beside it for the key maps) and says
which DyTViT arguments the weights need. Examples::

    cd tools/model_converters
    python convert_checkpoint.py mmseg_vit_b.pth vit_b_timm.pth
    python convert_checkpoint.py mae_pretrain_vit_base.pth mae_b.pth
    python convert_checkpoint.py videomae_k400.pth videomae_b.pth \\
        --src-format videomae --img-size 224

Keys DyTViT cannot represent stop the conversion with a list of them and
why; keys that are not part of the ViT (heads, decoders) are listed as
dropped.
"""
import argparse
import pprint

import torch

import mmdyt  # noqa: F401  (compat fixes)
from mmdyt.models.backbones.checkpoint_loading import read_state_dict
from vit_layouts import SOURCE_FORMATS, convert_vit_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='converted (timm-format) checkpoint')
    parser.add_argument(
        '--src-format',
        default='auto',
        choices=('auto', ) + SOURCE_FORMATS,
        help='layout of the source (default: detected from its keys)')
    parser.add_argument(
        '--img-size',
        type=int,
        default=224,
        help='VideoMAE: input size of the source model (default 224)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    result = convert_vit_checkpoint(
        read_state_dict(args.src), args.src_format, img_size=args.img_size)
    if result.dropped:
        print(f'dropped {len(result.dropped)} keys that are not part of the '
              'ViT:')
        reasons = {}
        for key, why in result.dropped.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            print(f'  {why}: {len(keys)} keys, e.g. {keys[:3]}')
    result.check()  # raises on unconvertible keys
    for note in result.notes:
        print(f'note: {note}')
    torch.save(
        dict(
            state_dict=result.state_dict,
            meta=dict(
                converted_from=args.src,
                dyt_vit_args=result.backbone_args)), args.dst)
    print(f'wrote {len(result.state_dict)} tensors to {args.dst}; use it '
          "with init_cfg=dict(type='Pretrained', checkpoint=...) and these "
          'DyTViT arguments:')
    pprint.pprint(result.backbone_args, sort_dicts=False)


if __name__ == '__main__':
    main()
