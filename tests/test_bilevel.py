"""MetaAugment's bilevel gradients: both engines against central finite differences and each other."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaaugment.sample_aware.lookahead import fast_lookahead, higher_lookahead, last_layer_lookahead
from metaaugment.sample_aware.policy_network import PolicyNetwork, normalize_weights
from metaaugment.sample_aware.transformations import embed_transformations


def per_sample(out, y):
    return F.cross_entropy(out, y, reduction="none")


def tiny_problem(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    policy = PolicyNetwork(feature_dim=5, hidden=7).to(dtype)
    x, y = torch.randn(8, 5, dtype=dtype), torch.randint(0, 3, (8,))
    vx, vy = torch.randn(6, 5, dtype=dtype), torch.randint(0, 3, (6,))
    pairs = torch.randint(0, 14, (8, 2))
    emb = embed_transformations(pairs, torch.rand(8, 2, dtype=dtype) * 10)
    alpha = torch.tensor(0.3, dtype=dtype, requires_grad=True)
    return model, policy, x, y, vx, vy, emb, alpha


def validation_loss_after_lookahead(model, policy, x, y, vx, vy, emb, alpha):
    """L_val(w - alpha sum_i w_i grad L_i(w)) evaluated directly (the function being differentiated)."""
    weights = normalize_weights(policy(x, emb)).detach()
    params = list(model.parameters())
    grads = torch.autograd.grad((weights * per_sample(model(x), y)).sum(), params)
    new = [p.detach() - alpha.detach() * g for p, g in zip(params, grads)]
    out = torch.func.functional_call(model, {n: v for (n, _), v in zip(model.named_parameters(), new)}, (vx,))
    return per_sample(out, vy).mean().item()


def engine_gradients(engine, model, policy, x, y, vx, vy, emb, alpha):
    policy.zero_grad()
    weights = normalize_weights(policy(x, emb))
    if engine == "higher":
        g = higher_lookahead(model, weights, alpha, x, y, vx, vy, per_sample)
    else:
        # float64: the finite-difference engine can take a tiny step
        g = fast_lookahead(model, per_sample(model(x), y), weights, alpha, x, y, vx, vy, per_sample, mode=engine,
                           fd_step=1e-8)
    weights.backward(g.weights)
    return [p.grad.clone() for p in policy.parameters()], g.alpha


@pytest.mark.parametrize("engine", ["higher", "jvp", "fd"])
def test_theta_and_alpha_gradients_match_central_finite_differences(engine):
    model, policy, x, y, vx, vy, emb, alpha = tiny_problem()
    theta_grads, alpha_grad = engine_gradients(engine, model, policy, x, y, vx, vy, emb, alpha)
    h = 1e-6
    numeric, analytic = [], []
    for p, g in zip(policy.parameters(), theta_grads):
        flat = p.data.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 6)):  # a spread of coordinates
            old = flat[index].item()
            flat[index] = old + h
            plus = validation_loss_after_lookahead(model, policy, x, y, vx, vy, emb, alpha)
            flat[index] = old - h
            minus = validation_loss_after_lookahead(model, policy, x, y, vx, vy, emb, alpha)
            flat[index] = old
            numeric.append((plus - minus) / (2 * h))
            analytic.append(g.view(-1)[index].item())
    numeric, analytic = torch.tensor(numeric), torch.tensor(analytic)
    assert (numeric - analytic).norm() / numeric.norm() < 1e-3
    a_plus = validation_loss_after_lookahead(model, policy, x, y, vx, vy, emb, alpha.detach() + h)
    a_minus = validation_loss_after_lookahead(model, policy, x, y, vx, vy, emb, alpha.detach() - h)
    numeric_alpha = (a_plus - a_minus) / (2 * h)
    assert abs(alpha_grad.item() - numeric_alpha) / abs(numeric_alpha) < 1e-3


def small_cnn_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 4))
    policy = PolicyNetwork(feature_dim=3 * 8 * 8)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 4, (16,))
    vx, vy = torch.rand(10, 3, 8, 8), torch.randint(0, 4, (10,))
    emb = embed_transformations(torch.randint(0, 14, (16, 2)), torch.rand(16, 2) * 10)
    return model, policy, x.flatten(1), x, y, vx, vy, emb


@pytest.mark.parametrize("engine", ["jvp", "fd"])
def test_fast_engine_agrees_with_higher_on_a_cnn_with_batch_norm(engine):
    model, policy, features, x, y, vx, vy, emb = small_cnn_problem()
    alpha = torch.tensor(0.1, requires_grad=True)

    def grads(name):
        policy.zero_grad()
        weights = normalize_weights(policy(features, emb))
        if name == "higher":
            g = higher_lookahead(model, weights, alpha, x, y, vx, vy, per_sample)
        else:
            g = fast_lookahead(model, per_sample(model(x), y), weights, alpha, x, y, vx, vy, per_sample, mode=name)
        weights.backward(g.weights)
        return torch.cat([p.grad.flatten() for p in policy.parameters()]), g.alpha

    with torch.no_grad():
        model(x)  # the training forward's one update of the running statistics, for comparability
    reference_theta, reference_alpha = grads("higher")
    theta, alpha_grad = grads(engine)
    cosine = F.cosine_similarity(theta, reference_theta, dim=0).item()
    assert cosine >= 0.999, cosine
    assert alpha_grad.item() == pytest.approx(reference_alpha.item(), rel=1e-2 if engine == "fd" else 1e-4)


def test_engines_leave_the_model_and_its_running_statistics_untouched():
    model, policy, features, x, y, vx, vy, emb = small_cnn_problem()
    losses = per_sample(model(x), y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weights = normalize_weights(policy(features, emb))
    fast_lookahead(model, losses, weights, torch.tensor(0.1), x, y, vx, vy, per_sample)
    fast_lookahead(model, losses, weights, torch.tensor(0.1), x, y, vx, vy, per_sample, mode="jvp")
    higher_lookahead(model, weights, torch.tensor(0.1), x, y, vx, vy, per_sample)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_last_layer_mode_equals_the_fast_engine_on_a_linear_head():
    torch.manual_seed(0)
    head = nn.Linear(6, 3).double()
    feats, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    vfeats, vy = torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    weights = torch.softmax(torch.randn(8, dtype=torch.float64), 0)
    alpha = torch.tensor(0.2, dtype=torch.float64)
    a = last_layer_lookahead(head, feats, weights, alpha, y, vfeats, vy, per_sample, mode="jvp")
    b = higher_lookahead(head, weights, alpha, feats, y, vfeats, vy, per_sample)
    torch.testing.assert_close(a.weights, b.weights)
    torch.testing.assert_close(a.alpha, b.alpha)


# -- the lookahead with the task network's own optimizer (lookahead_optimizer=task) -------------
def task_optimizer(model, nesterov: bool, warm: bool = True):
    """SGD with momentum, weight decay and (optionally) Nesterov; after one real step when
    `warm`, so that its momentum buffer is not empty."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=nesterov,
                                dampening=0.0)
    if warm:
        x = torch.randn(8, 5, dtype=next(model.parameters()).dtype, generator=torch.Generator().manual_seed(9))
        per_sample(model(x), torch.arange(8) % 3).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def validation_loss_after_a_real_step(model, optimizer, policy, x, y, vx, vy, emb, alpha):
    """L_val after the optimizer itself takes the weighted step at rate alpha, on copies (the
    function the task-optimizer lookahead differentiates)."""
    import copy

    twin = copy.deepcopy(model)
    twin_optimizer = type(optimizer)(twin.parameters(), **{k: v for k, v in optimizer.defaults.items()})
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # its buffers, not shared
    for group in twin_optimizer.param_groups:
        group["lr"] = float(alpha.detach())
    weights = normalize_weights(policy(x, emb)).detach()
    (weights * per_sample(twin(x), y)).sum().backward()
    twin_optimizer.step()
    return per_sample(twin(vx), vy).mean().item()


def task_optimizer_lookahead(engine, model, weights, alpha, x, y, vx, vy, optimizer, **fast_options):
    """The lookahead gradients of `engine` (higher, jvp or fd) following the task optimizer."""
    if engine == "higher":
        return higher_lookahead(model, weights, alpha, x, y, vx, vy, per_sample, optimizer=optimizer)
    return fast_lookahead(model, per_sample(model(x), y), weights, alpha, x, y, vx, vy, per_sample, mode=engine,
                          optimizer=optimizer, **fast_options)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("engine", ["higher", "jvp", "fd"])
def test_the_task_optimizer_lookahead_matches_central_finite_differences(engine, nesterov):
    model, policy, x, y, vx, vy, emb, alpha = tiny_problem()
    optimizer = task_optimizer(model, nesterov)
    policy.zero_grad()
    weights = normalize_weights(policy(x, emb))
    g = task_optimizer_lookahead(engine, model, weights, alpha, x, y, vx, vy, optimizer, fd_step=1e-8)
    weights.backward(g.weights)
    h = 1e-6

    def loss(alpha_value=alpha):
        return validation_loss_after_a_real_step(model, optimizer, policy, x, y, vx, vy, emb, alpha_value)

    numeric, analytic = [], []
    for p in policy.parameters():
        flat = p.data.view(-1)
        for index in range(0, flat.numel(), max(1, flat.numel() // 6)):
            old = flat[index].item()
            flat[index] = old + h
            plus = loss()
            flat[index] = old - h
            minus = loss()
            flat[index] = old
            numeric.append((plus - minus) / (2 * h))
            analytic.append(p.grad.view(-1)[index].item())
    numeric, analytic = torch.tensor(numeric), torch.tensor(analytic)
    assert (numeric - analytic).norm() / numeric.norm() < 1e-3
    numeric_alpha = (loss(alpha.detach() + h) - loss(alpha.detach() - h)) / (2 * h)
    assert abs(g.alpha.item() - numeric_alpha) / abs(numeric_alpha) < 1e-3


@pytest.mark.parametrize("engine", ["jvp", "fd"])
def test_the_task_optimizer_lookahead_of_the_fast_engine_agrees_with_higher_on_a_cnn(engine):
    model, policy, features, x, y, vx, vy, emb = small_cnn_problem()
    alpha = torch.tensor(0.1, requires_grad=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    per_sample(model(x), y).mean().backward()  # one real step: a momentum buffer
    optimizer.step()
    optimizer.zero_grad()

    def grads(name):
        policy.zero_grad()
        weights = normalize_weights(policy(features, emb))
        g = task_optimizer_lookahead(name, model, weights, alpha, x, y, vx, vy, optimizer)
        weights.backward(g.weights)
        return torch.cat([p.grad.flatten() for p in policy.parameters()]), g.alpha

    with torch.no_grad():
        model(x)
    reference_theta, reference_alpha = grads("higher")
    theta, alpha_grad = grads(engine)
    assert F.cosine_similarity(theta, reference_theta, dim=0).item() >= 0.999
    assert alpha_grad.item() == pytest.approx(reference_alpha.item(), rel=1e-2 if engine == "fd" else 1e-4)


def test_plain_sgd_is_the_task_optimizer_step_without_momentum_or_decay():
    model, policy, x, y, vx, vy, emb, alpha = tiny_problem()
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = normalize_weights(policy(x, emb)).detach()
    a = fast_lookahead(model, per_sample(model(x), y), weights, alpha, x, y, vx, vy, per_sample, mode="jvp")
    b = fast_lookahead(model, per_sample(model(x), y), weights, alpha, x, y, vx, vy, per_sample, mode="jvp",
                       optimizer=plain)
    assert torch.equal(a.weights, b.weights) and torch.equal(a.alpha, b.alpha)


def dropout_problem(seed=0):
    """An MLP with dropout in its body and its head; the head alone is the last-layer engine's."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Dropout(0.3))
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(32, 3))
    policy = PolicyNetwork(feature_dim=5, hidden=7)
    x, y = torch.randn(24, 5), torch.randint(0, 3, (24,))
    vx, vy = torch.randn(16, 5), torch.randint(0, 3, (16,))
    emb = embed_transformations(torch.randint(0, 14, (24, 2)), torch.rand(24, 2) * 10)
    return body, head, policy, x, y, vx, vy, emb


@pytest.mark.parametrize("engine", ["fd", "jvp", "last-layer"])
def test_with_dropout_every_engine_follows_the_training_forwards_masks(engine):
    """The fast engine differences two passes over the training batch: under two dropout masks
    its meta-gradient was noise (cosine 0.18 with higher, -0.35 between two repeats). Every
    pass now replays the training forward's masks (ForwardOutput.random_state)."""
    from metaaugment.steptools.scratch import RandomState

    body, head, policy, x, y, vx, vy, emb = dropout_problem()
    model = nn.Sequential(body, head)
    alpha = torch.tensor(0.3, requires_grad=True)
    if engine == "last-layer":  # the head on fixed features, against higher on the same head
        with torch.no_grad():
            x, vx = body(x), body(vx)
        model = head
    state = RandomState.capture("cpu")
    train_losses = per_sample(model(x), y)  # the training forward: its masks are drawn from `state`

    def grads(name):
        policy.zero_grad()
        weights = normalize_weights(policy(x if engine != "last-layer" else torch.zeros(24, 5), emb))
        if name == "higher":
            g = higher_lookahead(model, weights, alpha, x, y, vx, vy, per_sample, random_state=state)
        elif name == "last-layer":
            g = last_layer_lookahead(model, x, weights, alpha, y, vx, vy, per_sample, random_state=state)
        else:
            g = fast_lookahead(model, train_losses, weights, alpha, x, y, vx, vy, per_sample, mode=name,
                               random_state=state)
        weights.backward(g.weights)
        return torch.cat([p.grad.flatten() for p in policy.parameters()]), g.alpha

    reference_theta, reference_alpha = grads("higher")
    theta, alpha_grad = grads(engine)
    again, _ = grads(engine)
    assert F.cosine_similarity(theta, reference_theta, dim=0).item() >= 0.99
    assert alpha_grad.item() == pytest.approx(reference_alpha.item(), rel=1e-2)
    assert torch.equal(theta, again)  # a repeat is identical: no fresh masks, no run randomness consumed


def test_the_training_forward_records_the_state_its_dropout_masks_are_drawn_from():
    """What MetaAugment's policy hands the engines (ForwardOutput.random_state) replays the
    training forward's masks exactly, and replaying consumes none of the run's randomness."""
    from metaaugment import Batch
    from metaaugment.learners import forward_pass
    from metaaugment.steptools.scratch import replayed

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    batch = Batch(torch.randn(8, 5), torch.randint(0, 3, (8,)))
    output = forward_pass(model, batch)
    after = torch.get_rng_state()
    with replayed(output.random_state):
        again = model(batch.inputs)
    assert torch.equal(again, output.logits) and not torch.equal(model(batch.inputs), output.logits)
    torch.set_rng_state(after)
    with replayed(output.random_state):
        model(batch.inputs)
    assert torch.equal(torch.get_rng_state(), after)
