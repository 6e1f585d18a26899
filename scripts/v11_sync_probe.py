"""GPU probe for chapter 2's synccheck question (no record; JSON into OUT): do the control kernels pass, which of
them and of the three v11 fixes does synccheck flag, is racecheck clean, and what do the fixes cost.

    python3 scripts/v11_sync_probe.py $OUT
"""
import json
import sys
import time
import traceback
from pathlib import Path

from flashcore import bench, sanitize
from flashcore.check import check_spec, make_inputs
from flashcore.chapters import v11

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
out: dict = {}


def step(name, fn):
    t0 = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as exc:
        out[name] = dict(error=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc()[-3000:])
    print(f"== {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(json.dumps(out[name], default=str)[:1500], flush=True)
    (out_dir / "probe.json").write_text(json.dumps(out, default=str, indent=1))


for kid in v11.control_ids():
    for S in (512, 1000):
        step(f"control {kid} S{S}", lambda kid=kid, S=S: v11.check_control(kid, 1, 8, S, seed=S))
for kid in v11.FIX_VARIANTS:
    for S in (128, 512, 1000):
        step(f"check {kid} S{S}", lambda kid=kid, S=S: check_spec(kid, 1, 8, S, 64, seed=S).row())


def timing():
    q, k, v = make_inputs(1, 8, 512, 64, seed=5)
    fns = {kid: v11._timed_launch(v11._launcher(kid), q, k, v) for kid in v11.FIX_VARIANTS}
    fns["sdpa_cudnn"] = bench.sdpa_callables(q, k, v)["sdpa_cudnn"]
    return {n: bench.time_graph(f, launches_per_graph=10, samples=10).row() for n, f in fns.items()}


step("timing", timing)
step("synccheck matrix", lambda: v11.sync_matrix("1,8,512,64", timeout=240, details=4))
step("synccheck tail", lambda: sanitize.run_sanitizer("synccheck", list(v11.FIX_VARIANTS) + ["v11_ctl_raw_noinc"],
                                                       "1,8,1000,64", timeout=200))
step("racecheck", lambda: sanitize.run_sanitizer("racecheck", list(v11.FIX_VARIANTS) + v11.control_ids(),
                                                  "1,8,512,64", timeout=240))
