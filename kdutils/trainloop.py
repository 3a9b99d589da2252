"""The one optimisation loop behind the toy world's trainers: VAE, decoder, UNet, scorer and the student's pretraining.

Each trainer says what one step's loss is; this loop does the rest the same way for all of them:
AdamW, a linear warmup then a cosine decay of the learning rate, optional gradient clipping, a hook
after each step (the UNet's moving average) and a progress bar showing the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


def cosine_lr(optimizer, step: int, total: int, base: float, warmup: int = 50) -> None:
    """Set ``optimizer``'s learning rate for ``step``: ``base * (step + 1) / warmup`` during warmup, then half a cosine.

    Kept by hand: transformers' ``get_cosine_schedule_with_warmup`` starts its warmup at 0, not at
    ``1 / warmup``, so it would change the committed weights the builds reproduce.
    """
    scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for group in optimizer.param_groups:
        group["lr"] = base * scale


def progress_bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(range(total), desc=desc, disable=not progress, unit="step")


def train_steps(params: Iterable[torch.nn.Parameter], steps: int, lr: float, loss_at: Callable[[int], torch.Tensor],
                desc: str, progress: bool = True, *, weight_decay: float = 0.0, warmup: int = 50,
                clip: float | None = None, after_step: Callable[[int], None] | None = None) -> list[float]:
    """Run ``steps`` AdamW steps on ``params``, each on the loss ``loss_at(step)`` returns; the losses.

    ``loss_at`` draws its own batch, so a trainer's random draws happen in the order it writes them.
    """
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    bar = progress_bar(steps, desc, progress)
    for step in bar:
        cosine_lr(optimizer, step, steps, lr, warmup)
        loss = loss_at(step)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(step)
        losses.append(loss.detach())  # no host sync per step: read back every 50 steps and at the end
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return torch.stack(losses).tolist() if losses else []
