"""Parameter counts of the paper presets against the paper's 178M / 321M / 725M (Table 7).

Built on the meta device: shapes only, no memory. The paper gives neither the per-block depth nor the
MLP width, so the presets choose them (config._paper) and we only ask for the right size class.
"""

import re
from pathlib import Path

import pytest
import torch

from hpdm_core.config import preset
from hpdm_core.model import HPDM, count_parameters

PAPER = {"hpdm-s": 178e6, "hpdm-m": 321e6, "hpdm-l": 725e6, "hpdm-t2v": 3934e6}
TABLE = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def meta_count(name: str) -> int:
    with torch.device("meta"):
        return count_parameters(HPDM(preset(name).model))


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_presets_are_within_15_percent_of_the_paper(name):
    count = meta_count(name)
    assert abs(count / PAPER[name] - 1) < 0.15, f"{name}: {count / 1e6:.1f}M vs paper {PAPER[name] / 1e6:.0f}M"


def test_sizes_grow_with_the_latent_width_and_tiny_stays_tiny():
    counts = [meta_count(name) for name in ("hpdm-s", "hpdm-m", "hpdm-l")]
    assert counts == sorted(counts)
    assert meta_count("tiny") < 10e6



def test_the_documented_counts_are_the_code_s():
    """docs/training.md's table of parameter counts, to the digits it prints."""
    rows = re.findall(r"^\| ([a-z0-9-]+) \| ([\d,.]+) M \|", TABLE.read_text(), re.M)
    assert {name for name, _ in rows} >= {"tiny", "tiny-t2v", "hpdm-s", "hpdm-m", "hpdm-l", "hpdm-t2v"}
    for name, text in rows:
        digits = len(text.split(".")[1]) if "." in text else 0
        assert round(meta_count(name) / 1e6, digits) == float(text.replace(",", "")), (name, meta_count(name))
