"""DyT's losses: exact values, and that training with them lowers the task
loss while pulling the activation rate to its target."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdyt.models import DyTLoss, DyTViT, distill_loss, rate_loss
from mmdyt.models.layers.dispatcher import mean_rate
from mmdyt.models.losses import block_floor_loss, build_dyt_loss

SMALL = dict(
    arch=dict(
        embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=8)


def test_rate_loss_is_squared_distance_of_the_mean_rate():
    masks = [torch.tensor([[1., 0., 1., 1.]]), torch.tensor([[0., 0., 1.,
                                                              0.]])]
    assert mean_rate(masks).item() == pytest.approx(0.5)  # (0.75 + 0.25)/2
    assert rate_loss(masks, 0.3).item() == pytest.approx(0.04)
    assert block_floor_loss(masks, 0.5).item() == pytest.approx(
        (0 + 0.25**2) / 2)


def test_rate_loss_gradient_reaches_every_mask_entry():
    mask = torch.full((2, 4), 0.5, requires_grad=True)
    rate_loss([mask], 0.25).backward()
    # d/dm (mean(m) - r)^2 = 2 (mean - r) / numel
    assert torch.allclose(mask.grad, torch.full((2, 4), 2 * 0.25 / 8))


def test_distill_loss_is_kl_batchmean_and_detaches_the_teacher():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss = distill_loss(student, teacher)
    expected = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1),
                        reduction='batchmean')
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    assert distill_loss(teacher, teacher).item() == pytest.approx(0, abs=1e-6)


def test_distill_loss_of_maps_is_the_per_pixel_mean():
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    per_pixel = [
        distill_loss(student[..., i, j], teacher[..., i, j])
        for i in range(4) for j in range(5)
    ]
    assert distill_loss(student, teacher).item() == pytest.approx(
        torch.stack(per_pixel).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match='differ in shape'):
        distill_loss(student, teacher[:, :2])


def test_dyt_loss_names_and_weights():
    loss = DyTLoss(target_rate=0.25, rate_weight=3., distill=True,
                   distill_weight=0.5, complete_weight=2.)
    masks = [torch.ones(2, 4)]
    rate = loss.rate_losses(masks)
    assert set(rate) == {'loss_rate', 'act_rate'}
    assert rate['loss_rate'].item() == pytest.approx(3 * 0.75**2)
    assert rate['act_rate'].item() == 1.0
    logits = torch.randn(2, 3)
    complete = loss.complete_losses(logits, logits + 1.,
                                    dict(loss_ce=torch.tensor(1.5),
                                         acc=torch.tensor(80.)))
    assert complete['complete.loss_ce'].item() == 3.0  # weighted
    assert complete['complete.acc'].item() == 80.0  # not a loss: as is
    assert complete['loss_distill'].item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match='no dispatch masks'):
        loss.rate_losses([])


@pytest.mark.parametrize('kwargs, match', [
    (dict(target_rate=0), r'target_rate must be in \(0, 1\], got 0'),
    (dict(target_rate=1.5), r'target_rate must be in \(0, 1\], got 1.5'),
    (dict(min_block_rate=1), r'min_block_rate must be in \[0, 1\)'),
])
def test_dyt_loss_rejects_bad_rates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DyTLoss(**kwargs)


def test_build_dyt_loss_checks_the_backbone():
    with pytest.raises(ValueError, match='Owner needs a DyTViT backbone, got '
                       'Linear'):
        build_dyt_loss('Owner', nn.Linear(2, 2), None)
    with pytest.raises(ValueError, match='needs token dispatchers'):
        build_dyt_loss('Owner', DyTViT(**SMALL, dispatch=None),
                       dict(distill=True))
    assert build_dyt_loss('Owner', DyTViT(**SMALL), None).target_rate == 0.5


@pytest.mark.parametrize('target', [0.3, 0.7])
def test_training_lowers_the_loss_and_reaches_the_target_rate(target):
    """A frozen random ViT + adapters + dispatchers + a linear head learn a
    colour task with the rate loss; the measured rate ends within 0.05 of
    the target, from either side of the initial 0.5."""
    torch.manual_seed(0)
    backbone = DyTViT(**SMALL)
    head = nn.Linear(32, 3)
    loss_fn = DyTLoss(target_rate=target, rate_weight=2.)
    params = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params + list(head.parameters()), lr=1e-2)
    images = torch.randn(48, 3, 32, 32)
    labels = torch.randint(0, 3, (48, ))
    images[torch.arange(48), labels] += 1.0  # the class is the bright channel
    task_losses, rates = [], []
    backbone.train()
    for step in range(80):
        batch = torch.arange(16) + 16 * (step % 3)
        logits = head(backbone(images[batch])[-1].mean((2, 3)))
        task = F.cross_entropy(logits, labels[batch])
        losses = loss_fn.rate_losses(backbone.dispatch_masks)
        optimizer.zero_grad()
        (task + losses['loss_rate']).backward()
        optimizer.step()
        task_losses.append(task.item())
        rates.append(losses['act_rate'].item())
    first, last = (sum(v) / 10 for v in (task_losses[:10], task_losses[-10:]))
    assert last < 0.5 * first, (first, last)
    assert abs(sum(rates[-10:]) / 10 - target) < 0.05, rates[-10:]
    # The eval path thresholds sigmoid(score) at 0.5 without noise. The
    # training rate is the mean of sigmoid(score), so the eval rate equals
    # it only once the task makes the scores polarise (the demos: 0.471 and
    # 0.462 for 0.5). This task is solved by the head alone, so the scores
    # do not polarise; the eval rate still moves from 0.5 towards the target.
    backbone.eval()
    with torch.no_grad():
        backbone(images)
    assert (backbone.activation_rate() - 0.5) * (target - 0.5) > 0
