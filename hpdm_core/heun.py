"""The steps of sampling: how many each level takes, and EDM's Heun sampler over a sigma schedule
(docs/design.md, "Sampling": Algorithm 2 of Karras et al. 2022).

The sampler sees a level only as a function D(x; sigma) of its whole canvas (canvas.LevelDenoiser), so
it knows nothing of tiles, levels or conditions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def level_steps(steps: int, level: int) -> int:
    """N_l = max(1, N_0 // 2**l): steps halve per level."""
    return max(1, steps // 2 ** level)


def evaluations_per_tile(steps: int, level: int) -> int:
    """Network evaluations of one chain over a level: N_l Heun steps, the last one without correction."""
    return 2 * level_steps(steps, level) - 1


def heun_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, sigmas: torch.Tensor,
                churn_noise: Callable[[], torch.Tensor] | None = None, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0) -> torch.Tensor:
    """EDM Algorithm 2 from x_0 = noise * sigma_0; churn only when churn_noise is given (level 0).

    The last step (to sigma = 0) is an Euler step: x_N = D(x_hat; t_hat) exactly.
    """
    sigmas = [float(s) for s in sigmas]
    num_steps = len(sigmas) - 1
    x = noise * sigmas[0]
    for i, (t_cur, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        gamma = 0.0
        if churn_noise is not None and s_tmin <= t_cur <= s_tmax:
            gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
        t_hat = t_cur + gamma * t_cur
        x_hat = x
        if gamma > 0:
            x_hat = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise * churn_noise()
        d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (t_next - t_hat) * d_cur
        if t_next > 0:
            d_next = (x - denoise(x, t_next)) / t_next
            x = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_next)
    return x
