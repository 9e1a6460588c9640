"""Parameter counts of the paper presets against the paper's 178M / 321M / 725M (Table 7).

Built on the meta device: shapes only, no memory. The paper gives neither the per-block depth nor the
MLP width, so the presets choose them (config._paper) and we only ask for the right size class.
"""

import pytest
import torch

from hpdm_core.config import preset
from hpdm_core.model import HPDM, count_parameters

PAPER = {"hpdm-s": 178e6, "hpdm-m": 321e6, "hpdm-l": 725e6}


def meta_count(name: str) -> int:
    with torch.device("meta"):
        return count_parameters(HPDM(preset(name).model))


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_presets_are_within_15_percent_of_the_paper(name):
    count = meta_count(name)
    assert abs(count / PAPER[name] - 1) < 0.15, f"{name}: {count / 1e6:.1f}M vs paper {PAPER[name] / 1e6:.0f}M"


def test_sizes_grow_with_the_latent_width_and_tiny_stays_tiny():
    counts = [meta_count(name) for name in PAPER]
    assert counts == sorted(counts)
    assert meta_count("tiny") < 10e6
