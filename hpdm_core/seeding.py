"""Every seed of the project, derived from a tuple of integers by one function, `derive_seed`.

Training draws row j of step s from generators keyed by (seed, s, j, stream): a resumed run, a run
with more data-loader workers or more ranks, or a run replayed from a checkpoint sees exactly the same
clips, crops, flips, patch offsets, noise levels and label dropout. Sampling keys sample i's noise at
level l by (seed, i, l) (`sample_seed`), whatever the batching. Nothing else seeds a generator: the
global torch / numpy state is never used for a draw that a result depends on.
"""

from __future__ import annotations

import numpy as np
import torch

# Independent streams of one step.
DATA_STREAM = 0  # clip choice, start frame, flip, patch offsets
NOISE_STREAM = 1  # per-level sigmas, label dropout, the noise itself
PROBE_STREAM = 2  # the fixed batch of the label-gap probe (hpdm_core.learning)
REAL_CLIPS_STREAM = 3  # ablation: which real clips, and where they start


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys] + [len(keys)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def rng(*keys: int) -> np.random.Generator:
    """A numpy generator seeded by derive_seed(*keys)."""
    return np.random.default_rng(derive_seed(*keys))


# Two layouts older than derive_seed are pinned, because results people compare depend on them.

def sample_seed(seed: int, index: int, level: int) -> int:
    """The seed of sample `index` at pyramid level `level`: a seed gives the same videos in every
    version (docs/sampling.md), whatever the batching, so this layout never changes."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, index, level]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def protocol_rng(seed: int) -> np.random.Generator:
    """The real clips' start frames of an FVD evaluation: np.random.default_rng(--seed), one draw per
    clip, as docs/evaluation.md documents, so a cached or published number can be reproduced."""
    return np.random.default_rng(seed)


def generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g
