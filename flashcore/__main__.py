"""FlashCore from a shell, for readers without notebooks.

    python -m flashcore check   <kernel> --shape B,H,S,D[,S_kv][;B,H,S,D...] [--mode auto|live|replay] [--seed N]
    python -m flashcore bench   <kernel> --shape ... [--samples 50] [--peers sdpa_cudnn,sdpa_flash]
    python -m flashcore profile <kernel> --shape ... [--set full]
    python -m flashcore list

``check`` runs the harness's correctness check (fp64 reference, NaN-poisoned output, the 2·SDPA-error rule,
determinism); ``bench`` checks, then times CUDA-graph replays beside cuDNN and flash in the same process;
``profile`` writes an Nsight Compute report. Live (a GPU is present, or ``--mode live``), each command prints a
table and writes a run record ``runs/<gpu>/<run-id>-cli/run.json`` like the notebooks do; ``--mode replay``
prints the newest recorded rows for the kernel and shapes instead. Several shapes (``;``-separated) show a progress
bar. ``<kernel>`` is a registered kernel id (``list`` shows them) or ``triton_attention`` (check and bench).
``list`` prints the registry and the library's dispatch table.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

NOTEBOOK = "cli"
COMMANDS = ("check", "bench", "profile", "list")
TRITON_ID = "triton_attention"
HEAD_DIM = 64
DEFAULT_PEERS = ("sdpa_cudnn", "sdpa_flash")


class CliError(Exception):
    """A clear message for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------- arguments
def parse_shape_arg(text: str) -> List[tuple]:
    """'1,8,512,64;2,4,1000,64,77' → [(1, 8, 512, 64, 512), (2, 4, 1000, 64, 77)] (B, H, S, D, S_kv)."""
    from .driver import parse_shapes

    try:
        shapes = parse_shapes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (--shape takes B,H,S,D or B,H,S,D,S_kv, ';' between shapes)")
    out = []
    for s in shapes:
        if s[3] != HEAD_DIM:
            raise argparse.ArgumentTypeError(f"D must be {HEAD_DIM} in --shape {','.join(map(str, s))}, got {s[3]} "
                                             f"(other head dimensions are not supported yet)")
        out.append((s[0], s[1], s[2], s[3], s[4] if len(s) > 4 else s[2]))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m flashcore", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True, metavar="{check,bench,profile,list}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("kernel", help="a registered kernel id (see `list`) or triton_attention")
    common.add_argument("--shape", required=True, type=parse_shape_arg, metavar="B,H,S,D[,S_kv][;...]",
                        help="problem shape(s); D must be 64")
    common.add_argument("--mode", choices=("auto", "live", "replay"), default="auto",
                        help="live: measure on this GPU and record; replay: print the newest recorded rows")
    common.add_argument("--seed", type=int, default=0, help="input seed (each shape adds its index)")
    common.add_argument("--runs-dir", default=None, help="where records go (default: the repository's runs/)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser("check", parents=[common], help="correctness against the fp64 reference")
    c.add_argument("--runs", type=int, default=3, help="launches per check (determinism)")
    b = sub.add_parser("bench", parents=[common], help="check, then time beside cuDNN and flash")
    b.add_argument("--samples", type=int, default=50)
    b.add_argument("--launches-per-graph", type=int, default=20)
    b.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help="SDPA backends timed in the same process (sdpa_cudnn,sdpa_flash,sdpa_efficient,"
                        "sdpa_default; empty for none)")
    p = sub.add_parser("profile", parents=[common], help="one Nsight Compute report of the kernel")
    p.add_argument("--set", default="full", dest="ncu_set", help="ncu --set (basic, detailed, full)")
    sub.add_parser("list", help="the kernel registry and the dispatch table")
    return ap


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command == "check" and args.runs < 1:
        ap.error(f"--runs must be ≥ 1, got {args.runs}")
    if args.command == "bench":
        if args.samples < 3:
            ap.error(f"--samples must be ≥ 3, got {args.samples}")
        if args.launches_per_graph < 1:
            ap.error(f"--launches-per-graph must be ≥ 1, got {args.launches_per_graph}")
        from .bench import SDPA_BACKENDS

        args.peers = [p for p in args.peers.split(",") if p]
        bad = [p for p in args.peers if p not in SDPA_BACKENDS]
        if bad:
            ap.error(f"--peers: {', '.join(bad)} not in {', '.join(SDPA_BACKENDS)}")
    return args


def resolve_kernel(name: str, command: str, specs=None) -> str:
    """The kernel id to run, or a :class:`CliError` that lists what exists."""
    from . import kernels

    specs = kernels.all_specs() if specs is None else specs
    ids = sorted(s.id for s in specs)
    if name == TRITON_ID:
        if command == "profile":
            raise CliError("profile runs registered CUDA kernels (the ncu driver launches them); "
                           f"{TRITON_ID} is not one: use bench, or ncu on your own script")
        return name
    if name in ids:
        spec = next(s for s in specs if s.id == name)
        if command == "check" and kernels.is_control(spec):
            raise CliError(f"{name} is a control kernel ({spec.idea}): it does not compute attention, so the attention "
                           "check does not apply; chapter 2 checks it against its own reference")
        return name
    known = ", ".join(ids) if ids else "none registered yet"
    raise CliError(f"unknown kernel {name!r}: expected a registered kernel id ({known})"
                   + (f" or {TRITON_ID}" if command != "profile" else ""))


def check_shape(kernel: str, shape: tuple, specs=None) -> Optional[str]:
    """Why the kernel cannot run the shape (``S_q != S_kv`` without ``cross``, too long), or None."""
    if kernel == TRITON_ID:
        return None
    from . import kernels

    spec = {s.id: s for s in (kernels.all_specs() if specs is None else specs)}[kernel]
    B, H, S, D, S_kv = shape
    if S != S_kv and not spec.cross:
        return f"{kernel} needs S_q == S_kv (cross=False), got S={S}, S_kv={S_kv}"
    if max(S, S_kv) > spec.max_seq:
        return f"{kernel} handles S ≤ {spec.max_seq}, got {max(S, S_kv)}"
    return None


# --------------------------------------------------------------------------------------------- measurement
def _fn(kernel: str):
    """fn(q, k, v, o) for the check harness."""
    if kernel == TRITON_ID:
        from . import triton_peer

        return lambda q, k, v, o: o.copy_(triton_peer.triton_attention(q, k, v))
    from . import kernels
    from .compile import load_kernel

    launch = load_kernel(kernels.get(kernel))
    return lambda q, k, v, o: launch(q, k, v, o)


def measure_check(kernel: str, shape: tuple, seed: int, runs: int = 3) -> dict:
    from .check import check_kernel

    B, H, S, D, S_kv = shape
    chk = check_kernel(_fn(kernel), B, H, S, D, seed=seed, runs=runs, S_kv=S_kv, kernel=kernel)
    return dict(check=chk)


def measure_bench(kernel: str, shape: tuple, seed: int, samples: int = 50, launches_per_graph: int = 20,
                  peers: Sequence[str] = DEFAULT_PEERS) -> dict:
    """Check first; time only what passed. Returns {check, timing, peers: {name: timing}}."""
    import torch

    from .bench import sdpa_callables, time_graph
    from .check import make_inputs

    B, H, S, D, S_kv = shape
    out = measure_check(kernel, shape, seed, runs=2)
    q, k, v = make_inputs(B, H, S, D, seed=seed, S_kv=S_kv)
    o = torch.empty_like(q)
    fn = _fn(kernel)
    out["timing"] = (time_graph(lambda: fn(q, k, v, o), launches_per_graph=launches_per_graph, samples=samples)
                     if out["check"].passed else None)
    fns = sdpa_callables(q, k, v)
    out["peers"] = {}
    for name in peers:
        try:
            out["peers"][name] = time_graph(fns[name], launches_per_graph=launches_per_graph, samples=samples)
        except Exception as exc:     # a backend that refuses the shape
            out["peers"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return out


def measure_profile(kernel: str, shapes: Sequence[tuple], run, ncu_set: str = "full") -> list:
    """One ncu report for all shapes → [(shape, tidy row or None)]; the report lands in the run's folder."""
    from . import profile

    spec = ";".join(",".join(map(str, s)) for s in shapes)
    rep = profile.ncu_profile(run.dir / f"{kernel}.ncu-rep", kernels=[kernel], shapes=spec, ncu_set=ncu_set)
    rows = profile.rows_for(profile.read_report(rep), kernel)
    out = []
    for shape in shapes:
        label = ",".join(map(str, shape))
        match = [r for r in rows if r.get("launch_label", "").split(" ")[-1] == label]
        out.append((shape, match[0] if match else None, run.rel(rep)))
    return out


PROFILE_FIELDS = ("duration_us", "sm_throughput_pct", "dram_throughput_pct", "tensor_pipe_pct",
                  "achieved_occupancy_pct", "registers_per_thread")


def live(args, run, progress: bool = True) -> list:
    """Measure every shape into ``run``; return the rows added."""
    from .bench import tflops

    kernel = args.kernel
    rows = []
    if args.command == "profile":
        for shape, tidy, rel in measure_profile(kernel, args.shape, run, args.ncu_set):
            B, H, S, D, S_kv = shape
            fields = {f: (tidy or {}).get(f) for f in PROFILE_FIELDS}
            rows.append(run.add_result(kernel, B, H, S, D, S_kv=S_kv, ncu_report=rel, stage="profile",
                                       profiled=tidy is not None, **fields))
        return rows
    for i, shape in enumerate(_progress(args.shape, f"{args.command} {kernel}", progress)):
        B, H, S, D, S_kv = shape
        seed = args.seed + i
        if args.command == "check":
            m = measure_check(kernel, shape, seed, runs=args.runs)
            rows.append(run.add_result(kernel, B, H, S, D, S_kv=S_kv, check=m["check"], stage="check",
                                       **_tuned(kernel, S, S_kv)))
            continue
        m = measure_bench(kernel, shape, seed, samples=args.samples, launches_per_graph=args.launches_per_graph,
                          peers=args.peers)
        t = m["timing"]
        rows.append(run.add_result(kernel, B, H, S, D, S_kv=S_kv, check=m["check"], timing=t, stage="bench",
                                   tflops=tflops(B, H, S, D, t.median_us, S_kv) if t else None,
                                   **_tuned(kernel, S, S_kv)))
        for name, pt in m["peers"].items():
            if isinstance(pt, str):
                rows.append(run.add_result(name, B, H, S, D, S_kv=S_kv, stage="bench", error=pt))
            else:
                rows.append(run.add_result(name, B, H, S, D, S_kv=S_kv, timing=pt, stage="bench",
                                           tflops=tflops(B, H, S, D, pt.median_us, S_kv)))
    return rows


def _tuned(kernel: str, S: int, S_kv: int) -> dict:
    """The Triton autotuner's choice for the shape, as a record field (nothing for the CUDA kernels)."""
    if kernel != TRITON_ID:
        return {}
    try:
        from . import triton_peer

        return dict(config=triton_peer.best_config(S, S_kv))
    except Exception as exc:     # the row is still worth recording
        return dict(config=None, config_error=f"{type(exc).__name__}: {exc}"[:200])


def _progress(items, desc: str, progress: bool):
    items = list(items)
    if not progress or len(items) < 2:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="shape", dynamic_ncols=True)


def replay(args, runs_dir=None) -> tuple:
    """(rows, [record paths]): per shape, the newest recorded row of the kernel with what the command shows."""
    from . import records
    from .paths import RUNS_DIR

    need = {"check": "passed", "bench": "median_us", "profile": "ncu_report"}[args.command]
    recs = sorted(records.all_records(runs_dir or RUNS_DIR), key=lambda r: (r["provenance"].get("date", ""),
                                                                           r["run_id"]), reverse=True)
    rows, paths, missing = [], [], []
    for shape in args.shape:
        B, H, S, D, S_kv = shape
        found = None
        for rec in recs:
            for r in rec.get("results", []):
                if r["kernel"] == args.kernel and (r["B"], r["H"], r["S"], r["D"], r.get("S_kv", r["S"])) == shape \
                        and r.get(need) is not None:
                    found = (rec, r)
                    break
            if found:
                break
        if not found:
            missing.append(",".join(map(str, shape)))
            continue
        rows.append(dict(found[1], record=str(found[0].path)))
        if args.command == "bench":     # the peers timed beside it in the same run
            rows += [dict(r, record=str(found[0].path)) for r in found[0].get("results", [])
                     if r["kernel"].startswith("sdpa_") and (r["B"], r["H"], r["S"], r["D"],
                                                             r.get("S_kv", r["S"])) == shape]
        paths.append(str(found[0].path))
    if missing:
        raise CliError(f"no recorded {args.command} row of {args.kernel!r} at {'; '.join(missing)} under "
                       f"{runs_dir or RUNS_DIR}: run it live on a GPU (--mode live)", code=1)
    return rows, sorted(set(paths))


# ---------------------------------------------------------------------------------------------- printing
COLUMNS = {
    "check": ("kernel", "shape", "passed", "max_abs_err", "tol", "deterministic", "unwritten"),
    "bench": ("kernel", "shape", "passed", "max_abs_err", "median_us", "p10_us", "p90_us", "tflops"),
    "profile": ("kernel", "shape", "duration_us", "sm_throughput_pct", "dram_throughput_pct", "tensor_pipe_pct",
                "achieved_occupancy_pct", "registers_per_thread"),
}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width table (``shape`` is B,H,S,D[,S_kv] from the row)."""
    cells = []
    for r in rows:
        shape = f"{r['B']},{r['H']},{r['S']},{r['D']}" + (f",{r['S_kv']}" if r.get("S_kv", r["S"]) != r["S"] else "")
        line = [shape if c == "shape" else _cell(r.get(c)) for c in columns]
        if r.get("error"):
            line[-1] += f"  ({r['error']})"
        cells.append(line)
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(out)


def list_text(specs=None, evidence=None) -> str:
    """The registry and the dispatch table, as text."""
    from . import dispatch, kernels

    specs = kernels.all_specs() if specs is None else list(specs)
    lines = [f"Registered kernels ({len(specs)}):"]
    if not specs:
        lines.append("  (none registered yet: flashcore/specs/ declares none)")
    for s in sorted(specs, key=lambda s: (s.chapter, s.id)):
        flags = [f for f, on in (("cross", s.cross), ("expect_failure", s.expect_failure)) if on]
        lines.append(f"  {s.id:<28} {s.source:<32} chapter={s.chapter or '-':<20} threads={s.threads:<4} "
                     f"max_seq={s.max_seq}" + (f" [{', '.join(flags)}]" if flags else ""))
    lines.append("")
    lines.append("Dispatch table of flashcore.attention (B=1, H=8; the rule: flashcore.dispatch):")
    for route in dispatch.TABLE:
        lines.append(f"  S in [{route.s_min}, {route.s_max}]: prefer {', '.join(route.kernels)}")
    evidence = dispatch.recorded_evidence() if evidence is None else evidence
    for r in dispatch.route_table(specs, evidence):
        lines.append(f"  S_q={r['S_q']:<6} S_kv={r['S_kv']:<6} → {r['kernel'] or 'none'}: {r['reason']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None, provenance: Optional[dict] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        return _run(args, argv, provenance)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def _run(args, argv, provenance) -> int:
    if args.command == "list":
        print(list_text())
        return 0
    args.kernel = resolve_kernel(args.kernel, args.command)
    for shape in args.shape:
        problem = check_shape(args.kernel, shape)
        if problem:
            raise CliError(problem)
    from pathlib import Path

    from . import records
    from .paths import RUNS_DIR

    runs_dir = Path(args.runs_dir) if args.runs_dir else RUNS_DIR
    mode = args.mode
    if mode == "auto" or (mode == "live" and provenance is None):
        from .book import resolve_mode

        try:
            mode = resolve_mode(mode)
        except RuntimeError as exc:
            raise CliError(str(exc), code=1)
    if mode == "replay":
        rows, paths = replay(args, runs_dir)
        print(f"replayed from {', '.join(paths)}")
        print(format_table(rows, COLUMNS[args.command]))
        return 0
    params = dict(command=args.command, kernel=args.kernel, shapes=[list(s) for s in args.shape], seed=args.seed)
    params.update({k: getattr(args, k) for k in ("runs", "samples", "launches_per_graph", "peers", "ncu_set")
                   if hasattr(args, k)})
    run = records.Run(NOTEBOOK, params=params, command="python -m flashcore " + " ".join(argv), runs_dir=runs_dir,
                      provenance=provenance)
    rows = live(args, run, progress=not args.no_progress)
    path = run.save()
    print(format_table(rows, COLUMNS[args.command]))
    print(f"recorded {path}")
    failed = [r for r in rows if r.get("passed") is False or r.get("profiled") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
