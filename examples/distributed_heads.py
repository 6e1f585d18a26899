"""flashcore inside torch.distributed: the heads split across GPUs, one process per GPU (NCCL), the outputs
gathered and checked against SDPA on one GPU.

    torchrun --standalone --nproc_per_node=2 examples/distributed_heads.py
    torchrun --standalone --nproc_per_node=4 examples/distributed_heads.py --B 2 --H 32 --kv-heads 8 --S 2048 \
        --D 128 --dtype bfloat16 --causal

Rank 0 makes the inputs and broadcasts them (NCCL); each rank runs ``flashcore.attention`` on its H / world query
heads (and the H_kv / world key/value heads they read: grouped heads stay with their queries), then
``all_gather`` puts the heads back together on every rank. Rank 0 compares the result with
``torch.nn.functional.scaled_dot_product_attention`` on the whole problem by the harness's pass rule — at most twice
SDPA's own distance from the fp64 reference — and every rank exits non-zero if it fails.

Multicast stays off (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``): the lent multi-GPU hosts
require it, and the heads-split needs nothing but a broadcast and an all-gather.
"""
import os

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import flashcore  # noqa: E402
from flashcore.harness.check import passes, tolerance  # noqa: E402
from flashcore.harness.reference import attention_ref64  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--H", type=int, default=16, help="query heads (divisible by the number of processes)")
    ap.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default H; GQA when fewer)")
    ap.add_argument("--S", type=int, default=1024)
    ap.add_argument("--D", type=int, default=64, choices=(64, 128))
    ap.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def shard(H: int, H_kv: int, rank: int, world: int):
    """(query heads, key/value heads) of one rank: contiguous blocks, so a query head's key/value head is local."""
    if H % world or H_kv % world:
        raise SystemExit(f"H={H} and H_kv={H_kv} must both be divisible by the {world} processes")
    hq, hk = H // world, H_kv // world
    return slice(rank * hq, (rank + 1) * hq), slice(rank * hk, (rank + 1) * hk)


def main(argv=None) -> int:
    args = parse(argv)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    dtype = getattr(torch, args.dtype)
    B, H, S, D = args.B, args.H, args.S, args.D
    H_kv = args.kv_heads or H
    q = torch.empty(B, H, S, D, device="cuda", dtype=dtype)
    k = torch.empty(B, H_kv, S, D, device="cuda", dtype=dtype)
    v = torch.empty_like(k)
    if rank == 0:
        gen = torch.Generator(device="cpu").manual_seed(args.seed)
        for x in (q, k, v):
            x.copy_(torch.randn(x.shape, generator=gen))
    for x in (q, k, v):
        dist.broadcast(x, src=0)

    hq, hk = shard(H, H_kv, rank, world)
    # a head slice of a [B, H, S, D] tensor is not contiguous when B > 1: make the copy explicit (copy=False would
    # refuse the view; the default would copy it the same way)
    mine = flashcore.attention(q[:, hq].contiguous(), k[:, hk].contiguous(), v[:, hk].contiguous(),
                               is_causal=args.causal, enable_gqa=H_kv != H)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    out = torch.cat(parts, dim=1)

    ok = torch.ones(1, device="cuda")
    if rank == 0:
        ref = attention_ref64(q, k, v, causal=args.causal)
        sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal, enable_gqa=H_kv != H)
        err, sdpa_err = float((out.double() - ref).abs().max()), float((sdpa.double() - ref).abs().max())
        good = passes(err, sdpa_err)
        ok.fill_(1.0 if good else 0.0)
        print(f"{world} GPUs ({torch.cuda.get_device_name(local)}), heads {H} (key/value {H_kv}) split "
              f"{H // world} per GPU; B={B} S={S} D={D} {args.dtype}{' causal' if args.causal else ''}: "
              f"max |gathered − fp64| = {err:.3g}, SDPA on one GPU {sdpa_err:.3g}, tolerance "
              f"{tolerance(sdpa_err):.3g} → {'PASS' if good else 'FAIL'}; "
              f"max |gathered − SDPA| = {float((out.float() - sdpa.float()).abs().max()):.3g}", flush=True)
    dist.broadcast(ok, src=0)
    dist.destroy_process_group()
    return 0 if ok.item() == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
