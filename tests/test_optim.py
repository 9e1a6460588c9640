import math

import pytest
import torch
from torch import nn

from hpdm_core.optim import EMA, Lamb, WarmupCosine, decay_groups, warmup_cosine


def lamb_reference(w, grads, lr, b1, b2, eps, wd):
    """LAMB (You et al. 2019, Alg. 2) written out element by element in float64."""
    w = [float(x) for x in w]
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    for t, g in enumerate(grads, start=1):
        g = [float(x) for x in g]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        r = [(mi / (1 - b1 ** t)) / (math.sqrt(vi / (1 - b2 ** t)) + eps) for mi, vi in zip(m, v)]
        u = [ri + wd * wi for ri, wi in zip(r, w)]
        w_norm = math.sqrt(sum(x * x for x in w))
        u_norm = math.sqrt(sum(x * x for x in u))
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w = [wi - lr * trust * ui for wi, ui in zip(w, u)]
    return w


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lamb_matches_hand_computed_update(wd):
    w0 = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    grads = [torch.tensor([0.1, -0.3, 0.2, 0.05]), torch.tensor([-0.2, 0.1, 0.4, 0.0]),
             torch.tensor([0.3, 0.3, -0.1, 0.2])]
    p = nn.Parameter(w0.clone())
    opt = Lamb([p], lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd)
    for g in grads:
        p.grad = g.to(p.dtype)
        opt.step()
    expected = lamb_reference(w0.tolist(), [g.tolist() for g in grads], 0.05, 0.9, 0.99, 1e-6, wd)
    assert torch.allclose(p.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_lamb_step_length_is_lr_times_weight_norm():
    # The trust ratio makes ||delta w|| = lr * ||w|| whatever the gradient scale.
    for scale in (1e-4, 1.0, 1e3):
        p = nn.Parameter(torch.randn(64, dtype=torch.float64))
        before = p.detach().clone()
        opt = Lamb([p], lr=0.01, weight_decay=0.0)
        p.grad = scale * torch.randn(64, dtype=torch.float64)
        opt.step()
        assert (p.detach() - before).norm().item() == pytest.approx(0.01 * before.norm().item(), rel=1e-6)


def test_lamb_without_layer_adaptation_takes_a_plain_adam_step():
    # adapt=False (the non-decayed group by default): no trust ratio, so a small tensor moves by
    # lr per element on the first step (m_hat / sqrt(v_hat) = sign(g)), not by lr x its tiny norm.
    p = nn.Parameter(torch.full((4,), 0.02, dtype=torch.float64))
    opt = Lamb([{"params": [p], "adapt": False}], lr=0.01)
    p.grad = torch.tensor([3.0, -0.5, 1e-3, -2.0], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([0.01, 0.03, 0.01, 0.03], dtype=torch.float64)
    assert torch.allclose(p.detach(), expected, atol=1e-5)


def test_decay_groups_adapt_only_the_weight_matrices_unless_asked():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    matrices, other = decay_groups(model, 0.01)
    assert matrices["adapt"] and not other["adapt"]
    assert decay_groups(model, 0.01, adapt_all=True)[1]["adapt"]


def test_lamb_zero_weights_use_trust_one():
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = Lamb([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    # First step: m_hat = g, v_hat = g^2 -> r = sign(g) (up to eps); trust 1 because ||w|| = 0.
    assert torch.allclose(p.detach(), torch.tensor([-0.1, 0.1, 0.0], dtype=torch.float64), atol=1e-6)


def test_decay_groups_exclude_biases_norms_embeddings():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(5, 4))
    model.register_parameter("latents", nn.Parameter(torch.zeros(3, 4)))
    decay, no_decay = decay_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model[0].weight)]
    assert len(no_decay["params"]) == 5  # linear bias, norm weight + bias, embedding, latents


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    values = [warmup_cosine(s, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    opt = Lamb([nn.Parameter(torch.ones(1))], lr=1.0)
    schedule = WarmupCosine(opt, 2e-3, 10, 110)
    schedule.step_count = 60
    assert schedule.apply() == pytest.approx(1e-3) and opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_ema_follows_decay():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # n = 0: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.9))
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.model.weight, torch.ones(1, 2), atol=1e-6)
    assert not ema.model.weight.requires_grad
