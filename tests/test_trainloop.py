"""The one loop the toy world's trainers share (issue 24): its schedule, clipping and hook."""

import math

import torch

from kdutils.trainloop import cosine_lr, train_steps


def test_train_steps_warms_up_then_follows_half_a_cosine_and_learns():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(3))
    target = torch.tensor([1.0, -2.0, 0.5])
    seen = []
    optimizer_lrs = []

    def loss_at(step):
        seen.append(step)
        return ((w - target) ** 2).sum()

    def after(step):  # the learning rate this step used, read back from a fresh optimizer set the same way
        probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        cosine_lr(probe, step, 200, 0.1, warmup=10)
        optimizer_lrs.append(probe.param_groups[0]["lr"])

    losses = train_steps([w], 200, 0.1, loss_at, "test", progress=False, warmup=10, after_step=after)
    assert seen == list(range(200)) and len(losses) == 200
    assert math.isclose(optimizer_lrs[0], 0.1 / 10) and math.isclose(optimizer_lrs[9], 0.1)
    assert math.isclose(optimizer_lrs[105], 0.1 * 0.5 * (1 + math.cos(math.pi * 95 / 190)))
    assert losses[-1] < 1e-3 * losses[0]


def test_train_steps_clips_the_gradient_norm(monkeypatch):
    w = torch.nn.Parameter(torch.zeros(2))
    clip = torch.nn.utils.clip_grad_norm_
    after_clip = []

    def spy(params, max_norm):
        clip(params, max_norm)
        after_clip.append(float(torch.cat([p.grad.flatten() for p in params]).norm()))

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train_steps([w], 2, 0.1, lambda step: 1000 * w.sum(), "test", progress=False, warmup=1, clip=1.0)
    assert len(after_clip) == 2 and all(math.isclose(n, 1.0, rel_tol=1e-5) for n in after_clip)
    train_steps([w], 2, 0.1, lambda step: 1000 * w.sum(), "test", progress=False, warmup=1)
    assert len(after_clip) == 2, "no clipping unless asked"
