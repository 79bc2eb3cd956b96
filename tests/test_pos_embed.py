"""layers.pos_embed: timm's resample_abs_pos_embed without anti-aliasing is
the authors' (and BEiT's, mmseg's) bicubic resampling, to the bit."""
import pytest
import torch
import torch.nn.functional as F

from mmdyt.models.layers.pos_embed import has_cls_entry, resample_pos_embed


def reference(pos_embed, new_grid, prefix, old_grid):
    """The hand-written resampling mmdyt had before using timm's."""
    num_patches = pos_embed.shape[1] - prefix
    head, patches = pos_embed.split([prefix, num_patches], 1)
    channels = pos_embed.shape[2]
    grid = patches.reshape(1, *old_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode='bicubic',
                         align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(
        pos_embed.dtype)
    return torch.cat([head, patches], dim=1)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('prefix', [0, 1, 5])
@pytest.mark.parametrize('old_grid,new_grid', [((4, 4), (2, 2)),
                                               ((4, 4), (32, 48)),
                                               ((3, 5), (7, 3)),
                                               ((2, 8), (4, 4)),
                                               ((14, 14), (24, 24))])
def test_resample_is_the_bicubic_reference(dtype, prefix, old_grid,
                                           new_grid):
    torch.manual_seed(0)
    table = torch.randn(1, prefix + old_grid[0] * old_grid[1], 16).to(dtype)
    given = old_grid if old_grid[0] != old_grid[1] else None
    out = resample_pos_embed(table, new_grid, prefix, old_grid=given)
    assert out.dtype == dtype
    assert torch.equal(out, reference(table, new_grid, prefix, old_grid))


def test_same_grid_returns_the_table():
    table = torch.randn(1, 17, 8)
    assert resample_pos_embed(table, (4, 4), 1) is table


def test_cls_entry():
    assert has_cls_entry(torch.zeros(1, 17, 8))
    assert not has_cls_entry(torch.zeros(1, 16, 8))
