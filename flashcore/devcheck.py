"""The quick GPU loop: compile, check, then time kernels beside cuDNN and flash in one process, print a table.

``python -m flashcore.devcheck --kernels v8_seed,v8_01_vec --shapes "1,8,512,64;1,8,1000,64" [--json out.json]``

Checking comes before timing, always: a kernel that fails the check is not timed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from .driver import parse_shapes


def devcheck(kernel_ids, shapes, sdpa=("sdpa_cudnn", "sdpa_flash"), seed: int = 1234, samples: int = 30,
             time_shapes=None) -> list:
    import torch

    from . import kernels
    from .bench import sdpa_callables, time_graph, tflops
    from .check import check_kernel, make_inputs
    from .compile import load_kernel

    rows = []
    launchers = {}
    for kid in kernel_ids:
        t0 = time.time()
        try:
            launchers[kid] = load_kernel(kernels.get(kid))
            rows.append(dict(kernel=kid, stage="compile", ok=True, seconds=round(time.time() - t0, 2)))
        except Exception as exc:  # report and go on with the others
            rows.append(dict(kernel=kid, stage="compile", ok=False, error=str(exc)[:2000]))
    for n, shape in enumerate(shapes):
        B, H, S, D = shape[:4]
        S_kv = shape[4] if len(shape) > 4 else S
        q, k, v = make_inputs(B, H, S, D, seed=seed + n, S_kv=S_kv)
        o = torch.empty_like(q)
        timed = time_shapes is None or shape in time_shapes
        if timed:
            for name, fn in sdpa_callables(q, k, v).items():
                if name in sdpa:
                    try:
                        t = time_graph(fn, samples=samples)
                        rows.append(dict(kernel=name, stage="time", shape=shape, median_us=t.median_us,
                                         p10_us=t.p10_us, p90_us=t.p90_us,
                                         tflops=tflops(B, H, S, D, t.median_us, S_kv)))
                    except Exception as exc:
                        rows.append(dict(kernel=name, stage="time", shape=shape, error=str(exc)[:300]))
        for kid, launch in launchers.items():
            spec = kernels.get(kid)
            if S_kv != S and not spec.cross:
                continue
            try:
                c = check_kernel(lambda q_, k_, v_, o_: launch(q_, k_, v_, o_), B, H, S, D, seed=seed + n,
                                 S_kv=S_kv, kernel=kid)
                row = dict(kernel=kid, stage="check", shape=shape, passed=c.passed, max_abs_err=c.max_abs_err,
                           tol=c.tol, deterministic=c.deterministic, unwritten=c.unwritten)
                rows.append(row)
                if timed and (c.passed or spec.expect_failure):
                    t = time_graph(lambda: launch(q, k, v, o), samples=samples)
                    rows.append(dict(kernel=kid, stage="time", shape=shape, median_us=t.median_us,
                                     p10_us=t.p10_us, p90_us=t.p90_us, tflops=tflops(B, H, S, D, t.median_us, S_kv)))
            except Exception as exc:
                rows.append(dict(kernel=kid, stage="check", shape=shape, passed=False, error=str(exc)[:2000]))
                torch.cuda.synchronize()
    return rows


def print_table(rows) -> None:
    for r in rows:
        if r["stage"] == "compile":
            print(f"compile {r['kernel']:<28} {'ok' if r['ok'] else 'FAILED: ' + r.get('error', '')}")
    print(f"\n{'kernel':<28} {'shape':<18} {'passed':<7} {'max_err':>9} {'tol':>9} {'det':<5} "
          f"{'median_us':>9} {'p10':>8} {'p90':>8} {'TFLOP/s':>8}")
    by = {}
    for r in rows:
        if r["stage"] in ("check", "time"):
            by.setdefault((r["kernel"], tuple(r["shape"])), {}).update(r)
    for (kid, shape), r in by.items():
        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "-"
        print(f"{kid:<28} {','.join(map(str, shape)):<18} {str(r.get('passed', '-')):<7} {f('max_abs_err', '9.2e')} "
              f"{f('tol', '9.2e')} {str(r.get('deterministic', '-')):<5} {f('median_us', '9.2f')} "
              f"{f('p10_us', '8.2f')} {f('p90_us', '8.2f')} {f('tflops', '8.1f')}"
              + (f"  ERROR: {r['error'][:300]}" if r.get("error") else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashcore.devcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--shapes", default="1,8,512,64")
    ap.add_argument("--time-shapes", default=None, help="only time these shapes (default: all)")
    ap.add_argument("--sdpa", default="sdpa_cudnn,sdpa_flash")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    shapes = parse_shapes(args.shapes)
    time_shapes = parse_shapes(args.time_shapes) if args.time_shapes else None
    rows = devcheck([k for k in args.kernels.split(",") if k], shapes,
                    sdpa=tuple(s for s in args.sdpa.split(",") if s), samples=args.samples, time_shapes=time_shapes)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
