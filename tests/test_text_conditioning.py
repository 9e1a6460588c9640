"""Text conditioning of the network: the prompt reaches it, the null text is what dropout and guidance
use, caching stays exact, and the sampler runs on texts as it does on classes."""

import pytest
import torch

from hpdm_core import conditioning
from hpdm_core.conditioning import TextCondition
from hpdm_core.config import SampleConfig, preset
from hpdm_core.diffusion import build_denoiser, drop_labels
from hpdm_core.model import HPDM
from hpdm_core.sampling import generate
from tests.test_model import make_inputs, make_model, small_config

TEXT_DIM = 12


def text_config(fusion="deep", levels_per_block=(1, 2, 3, 3)):
    cfg = small_config(fusion, levels_per_block)
    cfg.model.conditioning, cfg.model.text_dim = "text", TEXT_DIM
    return cfg.validate()


def random_texts(batch: int, tokens: int = 5, seed: int = 0, dtype=torch.float64) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=g)
    mask = torch.arange(tokens)[None] < lengths[:, None]
    return TextCondition(torch.randn(batch, tokens, TEXT_DIM, generator=g, dtype=dtype) * mask[..., None], mask)


def test_class_model_keeps_its_layout():
    """A class-conditional model has no text weights and the same state-dict keys as before."""
    model = HPDM(small_config().model)
    keys = set(model.state_dict())
    assert "class_embedding.weight" in keys and not any("text" in k for k in keys)


def test_prompt_changes_what_the_network_gets():
    cfg = text_config()
    model = make_model(cfg)
    x, noise_cond, offsets, _ = make_inputs(cfg, batch=3)
    text = random_texts(3)
    other = TextCondition(text.tokens.roll(1, 0), text.mask.roll(1, 0))
    with torch.no_grad():
        a, b = model(x, noise_cond, offsets, text), model(x, noise_cond, offsets, other)
        emb_a, emb_b = model.condition_embedding(text), model.condition_embedding(other)
    assert not torch.allclose(emb_a, emb_b)
    for level in range(3):  # every level hears the text
        assert (a[:, level] - b[:, level]).abs().amax() > 1e-6


def test_null_text_is_the_learned_one_and_ignores_padding():
    """An all-False mask is the null text: the learned null embedding, whatever the token values."""
    cfg = text_config()
    model = make_model(cfg)
    x, noise_cond, offsets, _ = make_inputs(cfg, batch=2)
    null = TextCondition(torch.randn(2, 5, TEXT_DIM, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.bool))
    other = TextCondition(torch.randn(2, 5, TEXT_DIM, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(model.condition_embedding(null), model.null_text.expand(2, -1))
        torch.testing.assert_close(model(x, noise_cond, offsets, null), model(x, noise_cond, offsets, other))
    # Masked-out tokens of a real text do not matter either.
    text = random_texts(2)
    noisy = TextCondition(torch.where(text.mask[..., None], text.tokens, torch.randn_like(text.tokens)), text.mask)
    with torch.no_grad():
        torch.testing.assert_close(model(x, noise_cond, offsets, text), model(x, noise_cond, offsets, noisy))


def test_null_text_at_the_label_dropout_rate():
    """Texts are dropped with the same draws as class labels: the same rows, at rate p."""
    n, p = 20_000, 0.1
    text = TextCondition(torch.ones(n, 2, 3), torch.ones(n, 2, dtype=torch.bool))
    labels = torch.zeros(n, dtype=torch.long)
    dropped_text = drop_labels(text, 7, p, torch.Generator().manual_seed(3))
    dropped_labels = drop_labels(labels, 7, p, torch.Generator().manual_seed(3))
    assert torch.equal(dropped_text.is_null, dropped_labels == 7)
    # Binomial: std sqrt(p (1 - p) / n) = 0.0021; 0.01 is more than 4 standard deviations.
    assert abs(dropped_text.is_null.float().mean().item() - p) < 0.01


@pytest.mark.parametrize("fusion", ["deep", "shallow"])
def test_cached_forward_equals_uncached_with_text(fusion):
    cfg = text_config(fusion)
    model = make_model(cfg, torch.float32)
    x, noise_cond, offsets, _ = make_inputs(cfg, batch=3, dtype=torch.float32)
    text = random_texts(3, dtype=torch.float32)
    with torch.no_grad():
        full = model(x, noise_cond, offsets, text)
        for level in range(3):
            cache = model.encode_context(x[:, :level], noise_cond[:, :level], offsets[:, :level], text)
            top = model(x[:, level:level + 1], noise_cond[:, level:level + 1], offsets[:, :level + 1], text,
                        context=cache)
            # float32 activations of width 32 summed over a few layers: rounding differences ~1e-6
            torch.testing.assert_close(top, full[:, level:level + 1], atol=1e-5, rtol=0)


def test_conditions_concatenate_and_select_alike():
    text = random_texts(4)
    both = conditioning.concat([text, conditioning.null_like(text, 3)])
    assert len(both) == 8 and both.is_null.tolist() == [False] * 4 + [True] * 4
    picked = both[torch.tensor([5, 0])]
    assert picked.is_null.tolist() == [True, False] and torch.equal(picked.tokens[1], text.tokens[0])
    labels = torch.tensor([0, 2])
    assert conditioning.null_like(labels, 3).tolist() == [3, 3]


def test_sampler_runs_on_texts_with_guidance():
    """The whole sampler on a text model with guidance on level 0: the same videos whatever the batch
    size, and the prompt changes the video."""
    cfg = preset("tiny-t2v")
    cfg.model.patch, cfg.model.num_blocks, cfg.model.levels_per_block = [2, 8, 8], 3, [1, 2, 3]
    cfg.model.text_dim = TEXT_DIM
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.validate()).eval()
    text = random_texts(3, dtype=torch.float32)
    options = SampleConfig(steps=4, overlap="hw", guidance=2.0, guidance_levels=1, s_churn=0.0)
    one = generate(denoiser, text, seed=1, options=options, batch_size=1)
    three = generate(denoiser, text, seed=1, options=options, batch_size=3)
    assert one.videos.shape == (3, 3, 8, 32, 32)
    assert one.labels.tolist() == [-1, -1, -1]
    # Different batch shapes take different float32 kernels: differences of a few 1e-6 per step.
    torch.testing.assert_close(one.videos, three.videos, atol=1e-4, rtol=0)
    swapped = generate(denoiser, text[torch.tensor([1, 0, 2])], seed=1, options=options, batch_size=3)
    assert (swapped.videos[0] - three.videos[0]).abs().amax() > 1e-3
