"""The checks that run on whatever device ``MMDYT_TEST_DEVICE`` names
(default ``cpu``): the part of the suite that ``gpu_check.sh`` runs on a
GPU. DyT's gathered evaluation equals the straightforward one, autocast in
bfloat16 (and float16 where the device has it) keeps DyT's decisions, an
AMP training step trains the adapters and dispatchers only, and host
synchronisations are counted."""
import os

import pytest
import torch

from mmdyt.models import DyTViT
from mmdyt.models.losses import rate_loss
from mmdyt_tools.benchmark.host_syncs import count_host_syncs
from mmdyt_tools.benchmark.peers import ReferenceGatherDyT
from helpers import TINY_12

DEVICE = torch.device(os.environ.get('MMDYT_TEST_DEVICE', 'cpu'))
if DEVICE.type == 'cuda' and not torch.cuda.is_available():
    pytest.skip('MMDYT_TEST_DEVICE is a CUDA device, but CUDA is not '
                'available', allow_module_level=True)

#: The autocast dtypes this device computes in.
AMP_DTYPES = [torch.bfloat16] + ([torch.float16]
                                 if DEVICE.type == 'cuda' else [])


def forward(model: DyTViT, x: torch.Tensor):
    """The last block's tokens and the dispatch masks of one forward."""
    outs, masks = model.forward_with_masks(x)
    return outs[-1], masks


def tiny_dyt(**kwargs) -> DyTViT:
    torch.manual_seed(0)
    return DyTViT(arch=TINY_12, img_size=64, patch_size=16, out_type='raw',
                  **kwargs).to(DEVICE)


def inputs(batch: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 64, 64, generator=generator).to(DEVICE)


def test_gathered_evaluation_equals_the_reference_gather():
    model = tiny_dyt().eval()
    x = inputs()
    with torch.inference_mode():
        got, masks = forward(model, x)
        want = ReferenceGatherDyT(model)(x)
    rate = float(torch.stack([m.float().mean() for m in masks]).mean())
    assert 0 < rate < 1  # some tokens skip, some do not
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('dtype', AMP_DTYPES, ids=str)
def test_autocast_keeps_the_decisions(dtype):
    model = tiny_dyt().eval()
    x = inputs()
    with torch.inference_mode():
        want, want_masks = forward(model, x)
        with torch.autocast(DEVICE.type, dtype=dtype):
            got, masks = forward(model, x)
    agree = torch.cat([(a == b).flatten()
                       for a, b in zip(masks, want_masks)]).float().mean()
    assert agree > 0.97
    error = (got.float() - want).norm() / want.norm()
    assert error < 0.05


@pytest.mark.parametrize('dtype', AMP_DTYPES, ids=str)
def test_amp_training_step_trains_adapters_and_dispatchers(dtype):
    """One step of mixed-precision training (a gradient scaler for
    float16): the loss is finite, only adapters and dispatchers get
    gradients, and a few steps pull the rate towards the target."""
    model = tiny_dyt().train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    # float16 runs on CUDA only (AMP_DTYPES); torch.cuda.amp's scaler is
    # the spelling every supported torch has
    scaler = torch.cuda.amp.GradScaler() if dtype == torch.float16 else None
    x, rates = inputs(2), []
    for _ in range(5):
        with torch.autocast(DEVICE.type, dtype=dtype):
            out, masks = forward(model, x)
            loss = out.float().square().mean() + 10 * rate_loss(masks, 0.2)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        rates.append(float(torch.stack([m.float().mean()
                                        for m in masks]).mean()))
    for name, param in model.named_parameters():
        trains = '_adapter' in name or '_dispatcher' in name
        assert param.requires_grad == trains, name
        assert (param.grad is not None) == trains, name
    assert rates[-1] < rates[0]


def test_host_syncs_are_counted_on_a_gpu():
    model = tiny_dyt().eval()
    syncs = count_host_syncs(model, inputs())
    if DEVICE.type != 'cuda':
        assert syncs is None
    else:
        # one read of the active count per dispatch site, at least
        assert syncs >= len(model.dispatch_sites)
