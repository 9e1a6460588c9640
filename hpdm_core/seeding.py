"""Seeds derived from a tuple of integers, so every random draw of a run is addressable.

Training draws everything of step s on rank k from generators keyed by (seed, rank, s, stream):
a resumed run, a run with more data-loader workers, or a run replayed from a checkpoint sees exactly
the same clips, crops, flips, patch offsets, noise levels and label dropout.
"""

from __future__ import annotations

import numpy as np
import torch

# Independent streams of one step.
DATA_STREAM = 0  # clip choice, start frame, flip, patch offsets
NOISE_STREAM = 1  # per-level sigmas, label dropout, the noise itself
PROBE_STREAM = 2  # the fixed batch of the label-gap probe (hpdm_core.learning)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys] + [len(keys)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g
