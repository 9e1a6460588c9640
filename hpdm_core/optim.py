"""Optimisation: LAMB, the warm-up + cosine learning-rate schedule, and an EMA of the weights.

LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning", Algorithm 2), per tensor w:
    m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
    r  = m_hat / (sqrt(v_hat) + eps)  with bias-corrected m_hat, v_hat
    u  = r + wd * w                   (decoupled weight decay, inside the update)
    w <- w - lr * trust * u,          trust = ||w|| / ||u||, and 1 when either norm is 0
Weight decay applies to the weight matrices of Linear / Conv layers only: biases, norm gains,
embeddings and free parameters such as learned latents get wd = 0 (the usual exclusions).

The trust ratio (layer adaptation) applies to the same weight matrices, and the other tensors take a
plain Adam step (trust = 1), as in the reference LAMB of BERT, whose `exclude_from_layer_adaptation`
defaults to the weight-decay exclusions. Why it matters: the trust ratio moves a tensor by lr x its
own norm per step, so tensors that start small (class and level embeddings, learned latents, position
tables initialised at std 0.02) barely move in a run of a few thousand steps; measured on the tiny
preset, the class embedding kept its initial scale and the class was ignored. `adapt=True` on every
group (config `train.trust_ratio = "all"`) restores layer adaptation for every tensor.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable

import torch
from torch import nn


class Lamb(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, adapt: bool = True):
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"LAMB betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, adapt=adapt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            # Tensors that have taken the same number of steps share their bias corrections.
            by_step: dict[float, list[torch.Tensor]] = {}
            for p in params:
                by_step.setdefault(self.state[p]["step"].item(), []).append(p)
            for t, same in by_step.items():
                self._update(same, t, group)
        return loss

    def _update(self, params: list[torch.Tensor], t: float, group: dict) -> None:
        """One LAMB step of tensors at step t, in whole-group (foreach) kernels and few passes over memory:
        r = m_hat / (sqrt(v_hat) + eps) = c * m / (sqrt(v) + eps * sqrt(bc2)) with c = sqrt(bc2) / bc1,
        so the bias corrections fold into two scalars instead of two passes."""
        beta1, beta2 = group["betas"]
        bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
        c = math.sqrt(bc2) / bc1
        grads = [p.grad for p in params]
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(m, grads, 1 - beta1)  # m <- b1 m + (1 - b1) g
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, group["eps"] * math.sqrt(bc2))
        update = torch._foreach_div(m, denom)  # u / c
        if group["weight_decay"]:
            torch._foreach_add_(update, params, alpha=group["weight_decay"] / c)
        if group["adapt"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            u_norm = c * torch.stack(torch._foreach_norm(update))
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            if hasattr(trust, "full_tensor"):  # FSDP: norms of sharded parameters are DTensors
                trust = trust.full_tensor()
            torch._foreach_mul_(update, (-group["lr"] * c * trust).tolist())
        else:
            torch._foreach_mul_(update, -group["lr"] * c)
        torch._foreach_add_(params, update)


def decay_groups(model: nn.Module, weight_decay: float, adapt_all: bool = False) -> list[dict]:
    """Two parameter groups: Linear/Conv weight matrices (weight decay, trust ratio) and everything
    else (no decay; a plain Adam step unless adapt_all). Optimizers without layer adaptation ignore
    the `adapt` key."""
    decay_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, decay_types)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "adapt": True, "name": "matrices"},
            {"params": no_decay, "weight_decay": 0.0, "adapt": adapt_all, "name": "other"}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr at `step` (0-based): linear warm-up to 1, then cosine decay to 0
    at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each group's lr to base_lr * warmup_cosine(step) before the optimizer step.

    A pure function of the step, so its state is just the step and the schedule's shape;
    extending a run (a larger --steps on resume) stretches the cosine to the new end.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, total_steps: int):
        self.optimizer = optimizer
        self.base_lr, self.warmup_steps, self.total_steps = base_lr, warmup_steps, total_steps
        self.step_count = 0

    def lr(self, step: int | None = None) -> float:
        step = self.step_count if step is None else step
        return self.base_lr * warmup_cosine(step, self.warmup_steps, self.total_steps)

    def apply(self) -> float:
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def advance(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step": self.step_count, "base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        # base_lr / warmup / total come from the (possibly extended) config; only the position is resumed.
        self.step_count = int(state["step"])


class EMA:
    """Exponential moving average of a model's parameters and floating-point buffers.

    The effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so a short run is not
    dominated by its random initialisation; it reaches `decay` after ~10 / (1 - decay) updates.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple | None = None  # (source model, its tensors, the EMA's), built on the first update

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def _tensors(self, model: nn.Module) -> tuple[list, list, list, list]:
        """(model floats, EMA floats, model others, EMA others), matched by name; kept between updates
        because building two state dicts every step costs as much as the average itself."""
        if self._pairs is None or self._pairs[0] is not model:
            ema_state, state = self.model.state_dict(), model.state_dict()
            floats = [n for n, value in ema_state.items() if value.is_floating_point()]
            others = [n for n, value in ema_state.items() if not value.is_floating_point()]
            self._pairs = (model, [state[n] for n in floats], [ema_state[n] for n in floats],
                           [state[n] for n in others], [ema_state[n] for n in others])
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        source, target, source_other, target_other = self._tensors(model)
        torch._foreach_lerp_(target, [s.to(t.dtype) for s, t in zip(source, target)], 1.0 - decay)
        for s, t in zip(source_other, target_other):
            t.copy_(s)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict, num_updates: int) -> None:
        self.model.load_state_dict(state)  # in place: the kept tensors stay the EMA's
        self.num_updates = num_updates
