"""Where does the library kernel stop being the fastest of our own? Times `flashcore` (v8_07, 64-row tiles, 2-CTA
split-KV at small grids) against the two-m-tile steps v8_09 / v8_10 (128-row tiles) and cuDNN over a range of
shapes, in one process, CUDA-graph replay; checks v8_09/v8_10 at the shapes first. Prints JSON (no record: an
exploration that decides whether the library should dispatch by shape).

    python3 scripts/v8_crossover.py > crossover.json
"""
import json
import sys

import torch

from flashcore import bench, kernels
from flashcore.check import check_spec, make_inputs
from flashcore.compile import load_kernel

SHAPES = [(1, 8, 512), (1, 8, 1024), (1, 8, 2048), (1, 8, 4096), (1, 8, 8192), (1, 8, 16384),
          (1, 16, 2048), (2, 16, 1024), (4, 16, 1024), (4, 16, 2048), (4, 16, 4096), (16, 16, 512)]
IDS = ["flashcore", "v8_07_dsmem_push", "v8_09_two_mtiles", "v8_10_mbarrier_combine"]
out = {"checks": [], "times": []}
for kid in IDS[2:]:
    for (B, H, S) in [(1, 8, 1000), (4, 16, 4096), (1, 8, 16384)]:
        out["checks"].append(dict(kernel=kid, B=B, H=H, S=S, passed=check_spec(kid, B, H, S, 64, seed=S).row()["passed"]))
for (B, H, S) in SHAPES:
    q, k, v = make_inputs(B, H, S, 64, seed=1)
    o = torch.empty_like(q)
    fns = {kid: (lambda L=load_kernel(kernels.get(kid)): L(q, k, v, o)) for kid in IDS}
    fns["sdpa_cudnn"] = bench.sdpa_callables(q, k, v)["sdpa_cudnn"]
    row = dict(B=B, H=H, S=S)
    for name, fn in fns.items():
        lp = 20 if S <= 2048 else 5
        t = bench.time_graph(fn, launches_per_graph=lp, samples=10)
        row[name] = round(t.median_us, 2)
        row[name + "_tflops"] = round(bench.tflops(B, H, S, 64, t.median_us), 1)
    out["times"].append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    del q, k, v, o
    torch.cuda.empty_cache()
print(json.dumps(out, indent=1))
