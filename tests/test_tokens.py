"""Pixels <-> tokens (hpdm_core/model/tokens.py): plain and overlapped windows."""

import pytest
import torch

from hpdm_core.config import Config
from hpdm_core.errors import BadInputError
from hpdm_core.model.tokens import Tokens, trapezoid

TOKEN, GRID = (1, 4, 4), (2, 4, 4)  # patches of 2x16x16


@pytest.mark.parametrize("margin", [1, 2])
def test_windows_shifted_by_a_token_sum_to_one(margin):
    w = trapezoid(4, margin)
    assert len(w) == 4 + 2 * margin and (w > 0).all()
    total = torch.zeros(4 * 3 + 2 * margin)
    for k in range(3):
        total[4 * k:4 * k + len(w)] += w
    assert torch.allclose(total[2 * margin:-2 * margin], torch.ones(len(total) - 4 * margin))
    if margin == 1:
        assert w.tolist() == [0.25, 0.75, 1.0, 1.0, 0.75, 0.25]


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_cut_holds_each_tokens_own_pixels(margin):
    """The centre of an overlapped window is the plain token: the same pixels, in the same places."""
    x = torch.randn(2, 3, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = Tokens(TOKEN, GRID).cut(x)  # [B, n, N, (tf th tw c)]
    values = Tokens(TOKEN, GRID, margin).cut(x)
    assert values.shape[:3] == plain.shape[:3]
    side = 4 + 2 * margin
    windows = values.reshape(*values.shape[:3], 3, side, side)[..., margin:margin + 4, margin:margin + 4]
    if margin == 0:
        windows = values
    else:
        plain = plain.reshape(*plain.shape[:3], 4, 4, 3).permute(0, 1, 2, 5, 3, 4)
    assert torch.equal(windows, plain)


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_constant_tokens_paste_to_a_constant_patch(margin):
    tokens = Tokens(TOKEN, GRID, margin)
    out = tokens.paste(torch.full((1, 2, 32, 3 * (4 + 2 * margin) ** 2), 0.7), 3)
    assert out.shape == (1, 2, 3, 2, 16, 16)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))  # float32 rounding of the window weights only


@pytest.mark.parametrize("margin", [1, 2])
def test_overlapped_tokens_blend_where_plain_tokens_step(margin):
    """Per-token constants: plain tokens jump by the whole difference at a token border; overlapped ones
    change by at most 1 / (2 * margin) of the largest neighbour difference per pixel (the ramp's slope)."""
    g = torch.Generator().manual_seed(1)
    per_token = torch.rand(1, 1, 32, 1, generator=g)  # one value per token
    plain = Tokens(TOKEN, GRID).paste(per_token.expand(-1, -1, -1, 48), 3)[0, 0, 0, 0]
    width = 3 * (4 + 2 * margin) ** 2
    blended = Tokens(TOKEN, GRID, margin).paste(per_token.expand(-1, -1, -1, width), 3)[0, 0, 0, 0]
    grid = per_token[0, 0, :16, 0].reshape(4, 4)
    largest = max((grid[:, 1:] - grid[:, :-1]).abs().max(), (grid[1:] - grid[:-1]).abs().max())
    assert (plain[:, 4] - plain[:, 3]).abs().max() > largest / 2  # the step is there without overlap
    steps = torch.cat([(blended[:, 1:] - blended[:, :-1]).flatten(), (blended[1:] - blended[:-1]).flatten()])
    assert steps.abs().max() <= largest / (2 * margin) + 1e-6


def test_overlap_must_fit_in_half_a_token():
    cfg = Config()
    cfg.model.token, cfg.model.token_overlap = [1, 3, 4], 2
    cfg.model.patch = [16, 36, 64]
    with pytest.raises(BadInputError, match="token_overlap must lie in 0..1"):
        cfg.validate()
    cfg.model.token_overlap = 1
    cfg.validate()
