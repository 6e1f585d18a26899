"""The fp64 reference: softmax(Q·Kᵀ·scale + mask)·V computed in float64 (on the inputs' device), with
``torch.nn.functional.scaled_dot_product_attention``'s semantics for the options the library supports:

* ``causal``: query i attends to keys j ≤ i — SDPA's mask ``ones(L, S).tril(diagonal=0)``, aligned to the top-left
  corner also when S_q ≠ S_kv (rows i ≥ S_kv see every key).
* grouped heads: k and v may have H_kv heads dividing H; query head h reads key/value head ``h // (H / H_kv)``
  (SDPA's ``enable_gqa=True``: ``repeat_interleave`` of k and v over the head dimension).
* ``scale``: any float (default 1/sqrt(D)), negative and zero included.

A row whose scores are all -inf is NaN here (the formula's 0/0); the causal mask never makes one (key 0 is always
allowed).
"""
from __future__ import annotations


def attention_ref64(q, k, v, scale=None, chunk_elems: int = 1 << 27, causal: bool = False):
    """float64 attention of fp16/bf16/fp32 torch tensors ``[..., H, S, D]`` (k, v: ``[..., H_kv, S_kv, D]``, H_kv
    dividing H); chunked over the leading dims to bound memory."""
    import torch

    if k.shape != v.shape or q.shape[-1] != k.shape[-1] or q.dim() != k.dim() or q.shape[:-3] != k.shape[:-3]:
        raise ValueError(f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        H, H_kv = q.shape[-3], k.shape[-3]
        if H_kv == 0 or H % H_kv:
            raise ValueError(f"k/v heads ({H_kv}) must divide q heads ({H})")
        k = k.repeat_interleave(H // H_kv, dim=-3)
        v = v.repeat_interleave(H // H_kv, dim=-3)
    d = q.shape[-1]
    scale = 1.0 / d ** 0.5 if scale is None else float(scale)
    lead = q.shape[:-2]
    S_q, S_kv = q.shape[-2], k.shape[-2]
    q2 = q.reshape(-1, S_q, d)
    k2 = k.reshape(-1, S_kv, d)
    v2 = v.reshape(-1, S_kv, d)
    per = max(1, chunk_elems // max(1, S_q * S_kv))
    out = torch.empty(q2.shape, dtype=torch.float64, device=q.device)
    mask = None
    if causal:
        mask = torch.ones(S_q, S_kv, dtype=torch.bool, device=q.device).tril(diagonal=0).logical_not()
    for i in range(0, q2.shape[0], per):
        s = torch.matmul(q2[i:i + per].double(), k2[i:i + per].double().transpose(-1, -2)) * scale
        if mask is not None:
            s = s.masked_fill(mask, float("-inf"))
        out[i:i + per] = torch.matmul(torch.softmax(s, dim=-1), v2[i:i + per].double())
    return out.reshape(*lead, S_q, d)
