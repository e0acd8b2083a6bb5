"""Losses and weighting: the numbers the learners' objective is built from."""
import torch
import torch.nn.functional as F

from metaaugment.losses import accuracy, per_sample_cross_entropy, weighted_mean


def test_soft_one_hot_targets_give_the_same_loss_as_indices():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    hard = per_sample_cross_entropy(logits, labels)
    soft = per_sample_cross_entropy(logits, F.one_hot(labels, 4).float())
    torch.testing.assert_close(hard, soft)
    assert hard.shape == (6,)


def test_soft_label_loss_is_the_mixture_of_the_two_losses():
    # Cross entropy is linear in the target distribution: the mixup identity.
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    a, b, lam = torch.tensor([0, 1, 2]), torch.tensor([4, 3, 2]), 0.3
    mixed = lam * F.one_hot(a, 5).float() + (1 - lam) * F.one_hot(b, 5).float()
    expected = lam * per_sample_cross_entropy(logits, a) + (1 - lam) * per_sample_cross_entropy(logits, b)
    torch.testing.assert_close(per_sample_cross_entropy(logits, mixed), expected)


def test_weighted_mean_normalizes_by_the_weight_sum():
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0])
    weights = torch.tensor([0.0, 1.0, 1.0, 2.0])
    assert weighted_mean(losses, weights).item() == (2 + 3 + 12) / 4
    assert weighted_mean(losses, 10 * weights).item() == weighted_mean(losses, weights).item()
    assert weighted_mean(losses, None).item() == losses.mean().item()
    assert weighted_mean(losses, torch.ones(4)).item() == losses.mean().item()


def test_weighted_mean_gradient_reaches_the_weights():
    # Lookahead policies differentiate the weighted loss with respect to their weights.
    losses = torch.tensor([1.0, 3.0])
    weights = torch.tensor([1.0, 1.0], requires_grad=True)
    weighted_mean(losses, weights).backward()
    # d/dw_i (sum w l / sum w) = (l_i - mean_w l) / sum w
    torch.testing.assert_close(weights.grad, torch.tensor([(1 - 2) / 2, (3 - 2) / 2]))


def test_accuracy_uses_the_argmax_of_soft_labels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == 2 / 3
    assert accuracy(logits, torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])) == 2 / 3
