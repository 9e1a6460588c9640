"""What a run is learning, measured while it trains: the label gap and the optimizer's update sizes.

A falling loss does not show that a class-conditional model uses its class. The label gap does: the
denoising loss of a fixed batch of real chains with wrong labels minus the loss with their true labels,
at fixed noise levels (every level of the chain at the same sigma, the same noise for both). It is
zero for a model that ignores the class and grows as the class comes to decide what it generates;
it is largest at middle-to-high sigmas, where the class must supply what the noisy input no longer
shows. The wrong labels are a derangement (every label replaced by another class), fixed by the seed.

Update sizes: ||delta w|| / ||w|| of one optimizer step, per parameter group and for the tensors that
carry the conditioning. LAMB moves a layer-adapted tensor by about lr per step whatever its scale; a
tensor whose ratio stays orders of magnitude below the others is one the run cannot change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpdm_core import conditioning
from hpdm_core.conditioning import Condition, TextCondition
from hpdm_core.diffusion import Denoiser
from hpdm_core.distributed import all_reduce_sum, world_size

PROBE_SIGMAS = (0.5, 2.0, 8.0, 30.0)
# Named tensors reported besides the optimizer's groups: the conditioning path and the learned tables.
WATCHED = ("model.class_embedding.weight", "model.text_proj.weight", "model.latents", "model.position")


@dataclass
class ProbeBatch:
    """Fixed real chains with their true and wrong conditions (classes or texts) and one fixed noise draw."""

    patches: torch.Tensor  # [B, n, C, f, h, w]
    offsets: torch.Tensor  # [B, n, 3]
    labels: Condition  # [B]
    wrong: Condition  # [B]: another class; for texts another row's text (of another class where there is one)
    noise: torch.Tensor  # like patches

    def to(self, device) -> "ProbeBatch":
        return ProbeBatch(*(t.to(device) for t in (self.patches, self.offsets, self.labels, self.wrong, self.noise)))


def wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by a different class, uniformly among the other K - 1."""
    shift = 1 + torch.randint(max(num_classes - 1, 1), labels.shape, generator=generator)
    return (labels + shift) % num_classes


def wrong_texts(text: TextCondition, labels: torch.Tensor, num_classes: int,
                generator: torch.Generator) -> TextCondition:
    """Each row's text replaced by another row's, of another class where the batch has one (the label
    gap of a text model: how much worse it denoises a video described by a text that is not its own).
    labels: the rows' classes, `num_classes` for an unlabelled row."""
    n = len(text)
    shift = 1 + torch.randint(max(n - 1, 1), (n,), generator=generator)
    order = (torch.arange(n) + shift) % n
    for i in range(n):
        others = torch.nonzero((labels != labels[i]) & (labels != num_classes)).flatten()
        if labels[i] != num_classes and len(others):
            order[i] = others[torch.randint(len(others), (), generator=generator)]
    return text[order]


def make_probe_batch(batch: dict[str, torch.Tensor], num_classes: int, generator: torch.Generator) -> ProbeBatch | None:
    """A ProbeBatch from a training batch dict (patches, offsets, labels or texts); None without labelled rows."""
    if "text_tokens" in batch:
        text = conditioning.from_batch(batch)
        keep = ~text.is_null
        if int(keep.sum()) < 2:
            return None
        patches, offsets, text, labels = batch["patches"][keep], batch["offsets"][keep], text[keep], batch["labels"][keep]
        return ProbeBatch(patches, offsets, text, wrong_texts(text, labels, num_classes, generator),
                          torch.randn(patches.shape, generator=generator))
    keep = batch["labels"] < num_classes  # unlabelled videos carry the null class
    if num_classes < 2 or not bool(keep.any()):
        return None
    patches, offsets, labels = batch["patches"][keep], batch["offsets"][keep], batch["labels"][keep]
    return ProbeBatch(patches, offsets, labels, wrong_labels(labels, num_classes, generator),
                      torch.randn(patches.shape, generator=generator))


@torch.no_grad()
def label_gap(denoiser: Denoiser, probe: ProbeBatch, sigmas=PROBE_SIGMAS) -> dict[str, float]:
    """{label_gap_sigma_S: loss(wrong) - loss(true), mean over levels; loss_true_sigma_S} for each sigma S."""
    out = {}
    for s in sigmas:
        sigma = torch.full(probe.patches.shape[:2], float(s), device=probe.patches.device)
        true = denoiser.loss(probe.patches, probe.noise, sigma, probe.offsets, probe.labels).mean()
        wrong = denoiser.loss(probe.patches, probe.noise, sigma, probe.offsets, probe.wrong).mean()
        out[f"label_gap_sigma_{s:g}"] = float(wrong - true)
        out[f"loss_true_sigma_{s:g}"] = float(true)
    return out


class UpdateSizes:
    """Snapshot the parameters before an optimizer step, then report ||delta w|| / ||w|| after it."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module):
        names = {id(p): name for name, p in model.named_parameters()}
        self.groups = [(group.get("name", f"group{i}"), list(group["params"]))
                       for i, group in enumerate(optimizer.param_groups)]
        self.watched = [(name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1], p)
                        for p in (q for _, params in self.groups for q in params)
                        for name in [names.get(id(p), "")] if name in WATCHED]
        self.before = {id(p): p.detach().clone() for _, params in self.groups for p in params}

    def report(self) -> dict[str, float]:
        entries = [(f"update_{name}", params) for name, params in self.groups if params]
        entries += [(f"update_{name}", [p]) for name, p in self.watched]
        # Squared norms of every delta and weight in one vector: under FSDP each rank holds shards,
        # and one all-reduce of the local sums gives the full norms.
        sums = torch.stack([torch.stack([_local(p.detach() - self.before[id(p)]).float().square().sum(),
                                         _local(self.before[id(p)]).float().square().sum()])
                            for _, params in entries for p in params]).cpu().double()
        sharded = torch.tensor([hasattr(p, "to_local") for _, params in entries for p in params])
        if sharded.any():  # replicated tensors count once in the sum over ranks
            sums = all_reduce_sum(torch.where(sharded[:, None], sums, sums / world_size()))
        out, row = {}, 0
        for key, params in entries:
            delta, norm = sums[row:row + len(params)].sum(0).tolist()
            out[key] = (delta / norm) ** 0.5 if norm > 0 else float("nan")
            row += len(params)
        return out


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The shard this rank holds (FSDP DTensor) or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
