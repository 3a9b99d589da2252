"""GPU memory without a GPU: count the tensor bytes a step keeps alive, on the CPU (``estimate_gpu_memory``)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ..distill import TARGETS, distill_step, make_optimizer, step_width, teacher_batch
from .loops import _batch, build_models


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storage alive while active; ``peak`` is the most seen after any op.

    Storages that exist before (weights, optimizer state, inputs) are passed as
    ``known`` and make up ``base``. Every new storage an op creates is added when
    it appears and subtracted when it is freed. That is what CUDA's
    ``max_memory_allocated`` counts, without the allocator's 512-byte rounding
    and the scratch space inside kernels.
    """

    def __init__(self, known=()):
        super().__init__()
        self._sizes = WeakIdKeyDictionary()
        for t in known:
            self._sizes.setdefault(t.untyped_storage(), t.untyped_storage().nbytes())
        self.base = sum(self._sizes.values())
        self.current = self.peak = self.base

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._sizes:
                    self._sizes[storage] = n = storage.nbytes()
                    self.current += n
                    weakref.finalize(storage, self._free, n)
        self.peak = max(self.peak, self.current)
        return out


class _Bf16:
    """Accelerate's bf16 mode reduced to what ``distill_step`` calls (Accelerate allows one precision per process)."""

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def estimate_gpu_memory(experiment: str, batch_size: int = 32, size: str = "full") -> dict:
    """GPU memory one engine step needs, measured on the CPU by counting live tensors.

    Runs ``distill_step`` with the engine's CUDA choices: the teacher in 16 bits
    (bf16 here, the same bytes as the fp16 it gets on CUDA), the student under
    bf16 autocast, fused AdamW, gradients freed after each step. Returns GB
    (2**30 bytes): ``base`` (weights, optimizer state, token ids) and ``peak``
    (the most alive at once during a step). A CUDA run adds the allocator's
    rounding and kernel scratch space, and its context (about 0.5 GB, outside
    PyTorch's counters).
    """
    from torch.optim.lr_scheduler import LambdaLR

    teacher, student = build_models(experiment, size)
    teacher.requires_grad_(False).eval().to(torch.bfloat16)
    student.train()
    target = TARGETS[experiment]
    opt = make_optimizer(student, target, 5e-5, 1e-4, "cpu")  # fused AdamW, as on CUDA
    sched = LambdaLR(opt, lambda _: 1.0)
    t_ids, en, ko, mask = _batch(teacher, student, batch_size)
    ids, masks = torch.cat([en, ko]), torch.cat([mask, mask])
    width = step_width(student, target, mask.sum(1))
    teacher_width = step_width(teacher, target, mask.sum(1))

    def step():
        target_batch = teacher_batch(teacher, t_ids, target, teacher_width)
        distill_step(student, opt, sched, _Bf16(), ids, masks, target_batch, target, width=width)

    step()  # creates the optimizer state, which then lives as long as training does
    known = [*teacher.parameters(), *teacher.buffers(), *student.parameters(), *student.buffers(), t_ids, ids, masks,
             *(v for state in opt.state.values() for v in state.values() if torch.is_tensor(v))]
    with LiveTensorBytes(known) as live:
        step()
    return {"experiment": experiment, "batch_size": batch_size, "base_gb": live.base / 1024 ** 3,
            "peak_gb": live.peak / 1024 ** 3}
