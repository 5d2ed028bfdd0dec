"""Losses and the ACT loss head that wraps a model for one training or evaluation step.

All loss math is float32 (the reference used float64; float32 is ample and fast on GPUs).
Metrics are returned as 0-dim device tensors (sums and counts) so the training loop can
accumulate them without a host sync and read them back only every `log_every` steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataset.loader import IGNORE_LABEL_ID


def stablemax_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log of stablemax: s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise, normalised.

    The negative branch sees x clamped to <= 0: torch.where differentiates both branches, and
    1 / (1 - x) at x = 1 would give inf * 0 = NaN gradients (seen in training)."""
    s = torch.where(logits < 0, 1.0 / (1.0 - logits.clamp(max=0.0)), logits + 1.0)
    return torch.log(s / s.sum(dim=-1, keepdim=True))


def token_losses(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token loss (B, L); positions labelled IGNORE_LABEL_ID contribute 0."""
    logits = logits.float()
    mask = labels != IGNORE_LABEL_ID
    safe_labels = torch.where(mask, labels, 0)
    if kind == "stablemax":
        log_probs = stablemax_log_probs(logits)
    elif kind == "softmax":
        log_probs = F.log_softmax(logits, dim=-1)
    else:
        raise ValueError(f"arch.loss={kind!r}: expected 'stablemax' or 'softmax'")
    picked = torch.gather(log_probs, -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, -picked, 0.0)


class ACTLossHead(nn.Module):
    """forward(carry, batch) -> (new_carry, loss, metrics, outputs).

    loss = sum over examples of (mean token loss) + q_loss_weight * (BCE of the halt logit
    against "the whole answer is right" [+ the continue logit against its bootstrapped target]).
    It is a sum over the batch: the caller divides by the global batch size.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, carry, batch):
        cfg = self.model.cfg
        new_carry, outputs = self.model(carry, batch)
        labels = new_carry["labels"]
        logits = outputs["logits"]

        with torch.no_grad():
            preds = logits.argmax(dim=-1)
            outputs["preds"] = preds
            mask = labels != IGNORE_LABEL_ID
            counts = mask.sum(-1)
            divisor = counts.clamp_min(1).unsqueeze(-1)
            correct = mask & (preds == labels)
            seq_correct = correct.sum(-1) == counts
            # Metrics count only examples that halt at this step (their final answer).
            valid = new_carry["halted"] & (counts > 0)
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (correct.float() / divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_correct).sum(),
                "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_correct)).sum(),
                "steps": torch.where(valid, new_carry["steps"], 0).sum(),
            }

        lm_loss = (token_losses(logits, labels, cfg.loss) / divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(outputs["q_halt_logits"], seq_correct.float(), reduction="sum")
        metrics["lm_loss"] = lm_loss.detach()
        metrics["q_halt_loss"] = q_halt_loss.detach()
        q_loss = q_halt_loss
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
            )
            metrics["q_continue_loss"] = q_continue_loss.detach()
            q_loss = q_loss + q_continue_loss
        loss = lm_loss + cfg.q_loss_weight * q_loss
        return new_carry, loss, metrics, outputs
