"""What a sample is conditioned on: a class index, or a text as T5 token embeddings.

Training, the loss and the sampler pass one *condition* batch around: a LongTensor of classes [B]
(index `num_classes` is the null class of classifier-free guidance), or a `TextCondition`. The
functions here treat both alike (select rows, concatenate, move, replace rows by the null
condition), so neither the trainer nor the sampler branches on the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch


@dataclass
class TextCondition:
    """A batch of texts: the encoder's token embeddings and which tokens are real.

    A row whose mask is all False is the null text (no caption, or dropped for guidance): the network
    then sees only its learned null token (model.hpdm.HPDM.text_context).
    """

    tokens: torch.Tensor  # [B, T, D_text] float
    mask: torch.Tensor  # [B, T] bool

    def __post_init__(self):
        if self.tokens.ndim != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(f"text tokens [B, T, D] and mask [B, T] expected, got {list(self.tokens.shape)} "
                             f"and {list(self.mask.shape)}")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index) -> "TextCondition":
        return TextCondition(self.tokens[index], self.mask[index])

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def to(self, device, non_blocking: bool = False) -> "TextCondition":
        return TextCondition(self.tokens.to(device, non_blocking=non_blocking),
                             self.mask.to(device, non_blocking=non_blocking))

    @property
    def is_null(self) -> torch.Tensor:
        """[B] bool: rows that carry no text."""
        return ~self.mask.any(1)


Condition = Union[torch.Tensor, TextCondition]


def batch_size(cond: Condition) -> int:
    return len(cond) if isinstance(cond, TextCondition) else int(cond.shape[0])


def concat(conds: list[Condition]) -> Condition:
    if isinstance(conds[0], TextCondition):
        return TextCondition(torch.cat([c.tokens for c in conds]), torch.cat([c.mask for c in conds]))
    return torch.cat(conds)


def null_like(cond: Condition, num_classes: int) -> Condition:
    """The null condition for every row of `cond` (the null class, or the empty text)."""
    if isinstance(cond, TextCondition):
        return TextCondition(torch.zeros_like(cond.tokens), torch.zeros_like(cond.mask))
    return torch.full_like(cond, num_classes)


def where_null(drop: torch.Tensor, cond: Condition, num_classes: int) -> Condition:
    """`cond` with the rows where `drop` [B] is True replaced by the null condition."""
    if isinstance(cond, TextCondition):
        return TextCondition(cond.tokens, cond.mask & ~drop.unsqueeze(1))
    return torch.where(drop, torch.full_like(cond, num_classes), cond)


def from_batch(batch: dict[str, torch.Tensor]) -> Condition:
    """The condition of a training batch (data.batches.StepBatches): its text when it has one, else labels."""
    if "text_tokens" in batch:
        return TextCondition(batch["text_tokens"].float(), batch["text_mask"].bool())
    return batch["labels"]
