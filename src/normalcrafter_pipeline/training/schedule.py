"""The paper's learning-rate schedule: linear warm-up, then exponential decay."""

from __future__ import annotations

import torch


def warmup_exponential_factor(step: int, warmup_steps: int, total_steps: int, final_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    Rises linearly to 1 over `warmup_steps`, then decays as `final_ratio ** ((step - warmup) / (total - warmup))`,
    reaching `final_ratio` at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    return final_ratio ** (min(step - warmup_steps, decay_steps) / decay_steps)


def get_warmup_exponential_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int = 100, total_steps: int = 20000, final_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """`LambdaLR` following `warmup_exponential_factor`."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"`warmup_steps` ({warmup_steps}) must be >= 0 and `total_steps` ({total_steps}) >= 1.")
    if not 0.0 < final_ratio <= 1.0:
        raise ValueError(f"`final_ratio` is {final_ratio}; it must be in (0, 1] (1 keeps the rate constant).")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_exponential_factor(step, warmup_steps, total_steps, final_ratio)
    )
