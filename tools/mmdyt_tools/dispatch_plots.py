"""Pictures of DyT's token dispatch: which tokens each block computed.

:func:`render_dispatch_grid` draws one panel per dispatcher site over the
input image (skipped tokens dimmed), plus a last panel colouring each token
by the number of sites that computed it; :func:`plot_rates` draws the rate
of every site. Panels are plain numpy/OpenCV images, so their sizes are
exact: a grid of ``n`` panels of an ``H x W`` image in ``cols`` columns is
``rows * (H + CAPTION_HEIGHT) + (rows - 1) * PANEL_GAP`` pixels high and
``cols * W + (cols - 1) * PANEL_GAP`` wide (:func:`grid_size`).
"""
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Height of the caption band above each panel, in pixels.
CAPTION_HEIGHT = 18
#: Gap between panels, in pixels.
PANEL_GAP = 4
#: Brightness of skipped tokens.
SKIPPED_BRIGHTNESS = 0.25
#: Size of :func:`plot_rates` figures in inches, at :data:`PLOT_DPI`.
PLOT_SIZE = (6.4, 3.6)
PLOT_DPI = 100


def site_label(block: int, site: str) -> str:
    """``'3 mlp'``: a dispatcher site's short name."""
    return f'{block} {site}'


def mask_to_grid(mask: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """One image's mask as a ``grid`` of booleans.

    Args:
        mask (np.ndarray): The mask of one image from
            :attr:`DyTViT.dispatch_masks`: one value per patch token, or a
            single value for ``'layer'`` dispatch (the whole image).
        grid (tuple[int, int]): Patch rows and columns.
    """
    mask = np.asarray(mask).reshape(-1) > 0
    if mask.size == 1:
        return np.full(grid, bool(mask[0]))
    if mask.size != grid[0] * grid[1]:
        raise ValueError(f'a mask of {mask.size} tokens does not fit a '
                         f'{grid[0]}x{grid[1]} patch grid')
    return mask.reshape(grid)


def _upsample(values: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a patch grid to an image shape."""
    return cv2.resize(
        values.astype(np.float32), (shape[1], shape[0]),
        interpolation=cv2.INTER_NEAREST)


def _with_caption(panel: np.ndarray, caption: str) -> np.ndarray:
    band = np.full((CAPTION_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption, (2, CAPTION_HEIGHT - 5),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def render_mask_panel(image: np.ndarray, active: np.ndarray,
                      caption: str) -> np.ndarray:
    """``image`` with the tokens ``active`` is False on dimmed, captioned.

    Args:
        image (np.ndarray): RGB image (H, W, 3), uint8, of the size the
            backbone saw.
        active (np.ndarray): Patch grid of booleans (h, w).
        caption (str): Text above the panel.

    Returns:
        np.ndarray: The panel, (H + CAPTION_HEIGHT, W, 3) uint8.
    """
    keep = _upsample(active, image.shape[:2])[..., None]
    scale = keep + (1 - keep) * SKIPPED_BRIGHTNESS
    panel = (image.astype(np.float32) * scale).round().astype(np.uint8)
    return _with_caption(panel, caption)


def render_count_panel(image: np.ndarray, counts: np.ndarray,
                       num_sites: int) -> np.ndarray:
    """``image`` coloured by how many sites computed each token.

    Args:
        image (np.ndarray): RGB image (H, W, 3), uint8.
        counts (np.ndarray): Patch grid (h, w) of counts in [0, num_sites].
        num_sites (int): Number of dispatcher sites.
    """
    level = _upsample(counts / max(num_sites, 1), image.shape[:2])
    heat = cv2.applyColorMap((level * 255).astype(np.uint8),
                             cv2.COLORMAP_VIRIDIS)[..., ::-1]
    panel = (0.4 * image + 0.6 * heat).round().astype(np.uint8)
    return _with_caption(panel, f'k/{num_sites} computed')


def grid_size(image_shape: Tuple[int, int], num_panels: int,
              cols: int) -> Tuple[int, int]:
    """(height, width) of a grid of ``num_panels`` panels of an image."""
    cols = min(cols, num_panels)
    rows = math.ceil(num_panels / cols)
    height = rows * (image_shape[0] + CAPTION_HEIGHT) + (rows - 1) * PANEL_GAP
    width = cols * image_shape[1] + (cols - 1) * PANEL_GAP
    return height, width


def render_dispatch_grid(image: np.ndarray,
                         masks: Sequence[np.ndarray],
                         sites: Sequence[Tuple[int, str]],
                         cols: int = 4) -> np.ndarray:
    """All sites' decisions on one image, plus the count panel.

    Args:
        image (np.ndarray): RGB image (H, W, 3), uint8, of the size the
            backbone saw (H, W multiples of the patch size).
        masks (Sequence[np.ndarray]): Per site, the patch grid (h, w) of
            booleans (:func:`mask_to_grid`).
        sites (Sequence[tuple[int, str]]): ``(block, site)`` per mask.
        cols (int): Panels per row. Defaults to 4.

    Returns:
        np.ndarray: The RGB grid, of :func:`grid_size` with
        ``len(masks) + 1`` panels.
    """
    if cols < 1:
        raise ValueError(f'cols must be >= 1, got {cols}')
    panels = [
        render_mask_panel(image, mask,
                          f'{site_label(*site)}: {mask.mean():.0%}')
        for mask, site in zip(masks, sites)
    ]
    counts = np.sum([m.astype(np.float64) for m in masks], axis=0)
    panels.append(render_count_panel(image, counts, len(masks)))
    height, width = grid_size(image.shape[:2], len(panels), cols)
    cols = min(cols, len(panels))
    canvas = np.full((height, width, 3), 255, np.uint8)
    panel_h, panel_w = panels[0].shape[:2]
    for i, panel in enumerate(panels):
        top = (i // cols) * (panel_h + PANEL_GAP)
        left = (i % cols) * (panel_w + PANEL_GAP)
        canvas[top:top + panel_h, left:left + panel_w] = panel
    return canvas


def plot_rates(path: str,
               sites: Sequence[Tuple[int, str]],
               rates: Sequence[float],
               spread: Optional[Tuple[Sequence[float],
                                      Sequence[float]]] = None,
               title: str = '') -> None:
    """Save a bar chart of the activation rate of every site.

    The figure is :data:`PLOT_SIZE` inches at :data:`PLOT_DPI` (640 x 360
    pixels).

    Args:
        path (str): The PNG to write.
        sites (Sequence[tuple[int, str]]): ``(block, site)`` per bar.
        rates (Sequence[float]): The rate per site.
        spread (tuple, optional): Per-site minimum and maximum (e.g. over
            the frames of a clip), drawn as error bars. Defaults to None.
        title (str): Figure title. Defaults to ''.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    positions = np.arange(len(rates))
    fig, ax = plt.subplots(figsize=PLOT_SIZE, dpi=PLOT_DPI)
    error = None
    if spread is not None:
        low, high = (np.asarray(s, dtype=float) for s in spread)
        error = np.stack([np.asarray(rates) - low, high - np.asarray(rates)])
    ax.bar(positions, rates, yerr=error, color='tab:blue', capsize=2)
    mean = float(np.mean(rates)) if len(rates) else 0.
    ax.axhline(mean, color='tab:red', linestyle='--', linewidth=1,
               label=f'mean {mean:.3f}')
    ax.set_xticks(positions)
    several = len({site for _, site in sites}) > 1
    ax.set_xticklabels([
        site_label(block, site) if several else str(block)
        for block, site in sites
    ], rotation=90 if several else 0, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_xlabel('block (dispatcher site)')
    ax.set_ylabel('activation rate')
    ax.set_title(title, fontsize=9)
    ax.legend(loc='upper right', fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.2)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def frame_rates(masks: Sequence[np.ndarray]) -> List[List[float]]:
    """Per site, the rate of each image/frame: masks (N, tokens) -> N rates.
    """
    return [np.asarray(m, dtype=float).reshape(m.shape[0], -1).mean(axis=1)
            .tolist() for m in masks]
