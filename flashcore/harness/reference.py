"""The fp64 reference: softmax(Q·Kᵀ·scale)·V computed in float64 (on the inputs' device)."""
from __future__ import annotations


def attention_ref64(q, k, v, scale=None, chunk_elems: int = 1 << 27):
    """float64 attention of fp16/fp32 torch tensors ``[..., S, D]``; chunked over the leading dims to bound memory."""
    import torch

    if q.shape[:-2] != k.shape[:-2] or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    d = q.shape[-1]
    scale = 1.0 / d ** 0.5 if scale is None else float(scale)
    lead = q.shape[:-2]
    q2 = q.reshape(-1, q.shape[-2], d)
    k2 = k.reshape(-1, k.shape[-2], d)
    v2 = v.reshape(-1, v.shape[-2], d)
    per = max(1, chunk_elems // max(1, q.shape[-2] * k.shape[-2]))
    out = torch.empty(q2.shape, dtype=torch.float64, device=q.device)
    for i in range(0, q2.shape[0], per):
        s = torch.matmul(q2[i:i + per].double(), k2[i:i + per].double().transpose(-1, -2)) * scale
        out[i:i + per] = torch.matmul(torch.softmax(s, dim=-1), v2[i:i + per].double())
    return out.reshape(*lead, q.shape[-2], d)
