"""TokenDispatcher: Gumbel-sigmoid, straight-through mask, eval threshold."""
import pytest
import torch

from mmdyt.models import TokenDispatcher


def test_eval_mask_is_a_deterministic_threshold_on_the_score():
    dispatcher = TokenDispatcher(embed_dims=16, threshold=0.7).eval()
    x = torch.randn(4, 50, 16)
    mask = dispatcher(x)
    expected = (torch.sigmoid(dispatcher.score(x)) > 0.7).float()
    assert mask.shape == (4, 50)
    assert torch.equal(mask, expected)
    assert torch.equal(mask, dispatcher(x))


def test_training_mask_is_hard_with_straight_through_gradient():
    dispatcher = TokenDispatcher(embed_dims=16, tau=5.0).train()
    x = torch.randn(2, 30, 16, requires_grad=True)
    mask = dispatcher(x)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    mask.sum().backward()
    # the gradient of the soft relaxation: sigmoid' / tau, non-zero
    assert dispatcher.linear.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_gumbel_sampling_activates_tokens_with_probability_sigmoid_score():
    # sigmoid((s + g1 - g2) / tau) > 0.5  <=>  s + Logistic(0, 1) > 0,
    # so P(active) = sigmoid(s) whatever tau is
    dispatcher = TokenDispatcher(embed_dims=1, tau=5.0).train()
    with torch.no_grad():
        dispatcher.linear.weight.fill_(1.0)
        dispatcher.linear.bias.zero_()
    scores = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    x = scores.view(1, -1, 1).expand(40000, -1, -1)
    rate = dispatcher(x).detach().mean(dim=0)
    torch.testing.assert_close(rate, torch.sigmoid(scores), atol=0.01, rtol=0)


def test_tau_scales_only_the_surrogate_gradient():
    grads = []
    for tau in (1.0, 5.0):
        torch.manual_seed(1)
        dispatcher = TokenDispatcher(embed_dims=4, tau=tau).train()
        with torch.no_grad():
            dispatcher.linear.weight.fill_(0.1)
        x = torch.ones(1, 1, 4)
        dispatcher(x).sum().backward()
        grads.append(dispatcher.linear.bias.grad.item())
    assert grads[0] > grads[1] > 0


def test_threshold_can_be_changed_on_a_trained_dispatcher():
    dispatcher = TokenDispatcher(embed_dims=8).eval()
    x = torch.randn(2, 100, 8)
    rates = []
    for threshold in (0.3, 0.5, 0.7):
        dispatcher.threshold = threshold
        rates.append(dispatcher(x).mean().item())
    # untrained scores are close to 0 (sigmoid ~0.5): the low threshold
    # keeps every token, the high one none, 0.5 about half
    assert rates[0] == 1 and rates[2] == 0
    assert 0.2 < rates[1] < 0.8


@pytest.mark.parametrize('threshold', [0, 1, -0.1, 1.5, 'high'])
def test_threshold_out_of_range(threshold):
    with pytest.raises(ValueError, match=r'threshold must be .* \(0, 1\)'):
        TokenDispatcher(embed_dims=8, threshold=threshold)
    dispatcher = TokenDispatcher(embed_dims=8)
    with pytest.raises(ValueError, match='threshold'):
        dispatcher.threshold = threshold


@pytest.mark.parametrize('tau', [0, -1.0, None])
def test_tau_out_of_range(tau):
    with pytest.raises(ValueError, match='tau must be a positive number'):
        TokenDispatcher(embed_dims=8, tau=tau)
