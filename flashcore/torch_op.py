"""``flashcore.attention`` as a PyTorch operator: ``torch.ops.flashcore.attention``, so ``torch.compile`` can trace it.

The operator is a ``torch.library.custom_op`` with a CUDA implementation (the library's eager call,
:func:`flashcore.api.attention`) and a fake implementation for tracing: it checks the inputs with the same rules
as the eager call (:func:`flashcore.validate.validate`, on the fake tensors' metadata) and returns an empty tensor
of the output's shape, dtype and device. ``flashcore.attention`` routes through the operator only while
``torch.compiler.is_compiling()``; eager callers do not pay the dispatcher.

    @torch.compile(fullgraph=True)
    def block(q, k, v):
        return flashcore.attention(q, k, v, is_causal=True)      # one node: flashcore.attention.default

Importing this module registers the operator (``import flashcore`` does it when torch is already imported, the
first eager call otherwise). :data:`FAKE_DEVICE_TYPES` are the device types the fake implementation accepts
(CUDA; a CPU test that registers a CPU stand-in kernel adds "cpu").
"""
from __future__ import annotations

from typing import Optional

import torch

from . import api, dispatch
from .validate import describe, validate

NAME = "flashcore::attention"
FAKE_DEVICE_TYPES = ("cuda",)


def _hint(n) -> int:
    """A size as an int without adding a guard: a symbolic size's example value (the eager call validates the
    real sizes again when it runs)."""
    if isinstance(n, int):
        return n
    node = getattr(n, "node", None)
    if node is not None and getattr(node, "hint", None) is not None:
        return int(node.hint)
    return int(n)


def _desc(x, name: str):
    d = describe(x, name, fake=True) if all(isinstance(s, int) for s in x.shape) and \
        all(isinstance(s, int) for s in x.stride()) else None
    if d is None:                                           # symbolic sizes: validate their example values
        from .validate import ArrayDesc

        dev = x.device
        d = ArrayDesc(dtype=str(x.dtype).replace("torch.", ""), shape=tuple(_hint(s) for s in x.shape),
                      strides=tuple(_hint(s) for s in x.stride()),
                      device="cpu" if dev.type == "cpu" else f"{dev.type}:{dev.index or 0}", data_ptr=0,
                      lib="torch", itemsize=x.element_size(), requires_grad=bool(x.requires_grad))
    return d


@torch.library.custom_op(NAME, mutates_args=(), device_types="cuda")
def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                 scale: Optional[float] = None, enable_gqa: bool = False, copy: bool = True,
                 kernel_id: Optional[str] = None) -> torch.Tensor:
    """The CUDA implementation: the eager library call. The forced kernel is ``kernel_id`` in the operator's schema:
    an argument named ``kernel`` collides with Inductor's ``FallbackKernel.create(kernel, ...)`` (the first GPU
    run of torch.compile failed on it: "got multiple values for argument 'kernel'")."""
    return api.attention(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, copy=copy,
                         kernel=kernel_id)


@attention_op.register_fake
def _attention_fake(q, k, v, is_causal=False, scale=None, enable_gqa=False, copy=True, kernel_id=None):
    validate(_desc(q, "q"), _desc(k, "k"), _desc(v, "v"), scale=scale, copy=True, grad_enabled=False,
             is_causal=is_causal, enable_gqa=enable_gqa, support=dispatch.library_support(unverified=api._UNVERIFIED),
             devices=FAKE_DEVICE_TYPES)
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2], q.shape[3]))


OP = torch.ops.flashcore.attention.default
