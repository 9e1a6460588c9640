"""Pixels <-> tokens (hpdm_core/model/tokens.py): plain and overlapped windows."""

import pytest
import torch

from hpdm_core.config import Config
from hpdm_core.errors import BadInputError
from hpdm_core.model.tokens import Tokens, tent

TOKEN, GRID = (1, 4, 4), (2, 4, 4)  # patches of 2x16x16


def test_tents_shifted_by_a_token_sum_to_one():
    w = tent(4)
    assert torch.allclose(w[:4] + w[4:], torch.ones(4))
    assert (w > 0).all()


@pytest.mark.parametrize("overlap", [False, True])
def test_cut_holds_each_tokens_own_pixels(overlap):
    """The centre of an overlapped window is the plain token: the same pixels, in the same places."""
    x = torch.randn(2, 3, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = Tokens(TOKEN, GRID, False).cut(x)  # [B, n, N, (tf th tw c)]
    values = Tokens(TOKEN, GRID, overlap).cut(x)
    assert values.shape[:3] == plain.shape[:3]
    if overlap:
        windows = values.reshape(*values.shape[:3], 3, 8, 8)[..., 2:6, 2:6]  # (c, kh, kw): the centre 4x4
        plain = plain.reshape(*plain.shape[:3], 4, 4, 3).permute(0, 1, 2, 5, 3, 4)
        assert torch.equal(windows, plain)
    else:
        assert torch.equal(values, plain)


@pytest.mark.parametrize("overlap", [False, True])
def test_constant_tokens_paste_to_a_constant_patch(overlap):
    tokens = Tokens(TOKEN, GRID, overlap)
    width = 3 * (64 if overlap else 16)
    out = tokens.paste(torch.full((1, 2, 32, width), 0.7), 3)
    assert out.shape == (1, 2, 3, 2, 16, 16)
    torch.testing.assert_close(out, torch.full_like(out, 0.7))  # float32 rounding of the tent weights only


def test_overlapped_tokens_blend_where_plain_tokens_step():
    """Per-token constants: plain tokens jump by the whole difference at a token border; overlapped ones
    change by at most a quarter of the largest neighbour difference per pixel (a tent 4 pixels wide)."""
    g = torch.Generator().manual_seed(1)
    per_token = torch.rand(1, 1, 32, 1, generator=g)  # one value per token
    plain = Tokens(TOKEN, GRID, False).paste(per_token.expand(-1, -1, -1, 48), 3)[0, 0, 0, 0]
    blended = Tokens(TOKEN, GRID, True).paste(per_token.expand(-1, -1, -1, 192), 3)[0, 0, 0, 0]
    grid = per_token[0, 0, :16, 0].reshape(4, 4)
    largest = max((grid[:, 1:] - grid[:, :-1]).abs().max(), (grid[1:] - grid[:-1]).abs().max())
    assert (plain[:, 4] - plain[:, 3]).abs().max() > largest / 2  # the step is there without overlap
    steps = torch.cat([(blended[:, 1:] - blended[:, :-1]).flatten(), (blended[1:] - blended[:-1]).flatten()])
    assert steps.abs().max() <= largest / 4 + 1e-6


def test_overlap_needs_even_token_sides():
    cfg = Config()
    cfg.model.token, cfg.model.token_overlap = [1, 3, 4], True
    cfg.model.patch = [16, 36, 64]
    with pytest.raises(BadInputError, match="token_overlap"):
        cfg.validate()
