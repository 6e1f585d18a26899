"""FlashCore's one command line: ``python -m flashcore <command>``.

    python -m flashcore list                                     # kernels, and the dispatch rule's choices
    python -m flashcore check   <kernel>[,<kernel>…] --shape B,H,S,D[,S_kv][;…]   # fp64 check, writes a record
    python -m flashcore bench   <kernel>[,<kernel>…] --shape …  [--peers sdpa_cudnn,sdpa_flash] [--samples 50]
    python -m flashcore profile <kernel> --shape …  [--set full | --sections SpeedOfLight,WarpStateStats]
    python -m flashcore sweep   [--quick] [--cases 200] [--tools memcheck,…] [--kernels id,id] [--sanitize id,id]
    python -m flashcore library [--param calls=300]                # the call's eager cost, checks, features
    python -m flashcore live    <notebook> [--param S=1024]      # one chapter's live measurements, no Jupyter

``check`` runs the harness's correctness check (fp64 reference, NaN-poisoned output, the pass rule,
determinism); ``bench`` checks, then times CUDA-graph replays beside the SDPA peers in the same process (the
harness's one routine, :func:`flashcore.harness.measure.check_then_time`); ``profile`` writes an Nsight Compute
report. Live (a GPU is present, or ``--mode live``), each writes a run record ``runs/<gpu>/<run-id>-cli/run.json``;
``--mode replay`` prints the newest recorded rows instead. ``<kernel>`` is a registered id (``list``) or
``triton_attention`` (check and bench). The program that ncu and compute-sanitizer wrap is separate:
``python -m flashcore.tools.driver``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from . import dispatch, kernels, records
from .paths import RUNS_DIR
from .tools.driver import parse_shapes

NOTEBOOK = "cli"
TRITON_ID = "triton_attention"
HEAD_DIM = 64
DEFAULT_PEERS = ("sdpa_cudnn", "sdpa_flash")
SDPA_NAMES = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")
MEASURING = ("check", "bench", "profile")


class CliError(Exception):
    """A clear message for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------- arguments
def parse_shape_arg(text: str) -> List[tuple]:
    """'1,8,512,64;2,4,1000,64,77' → [(1, 8, 512, 64, 512), (2, 4, 1000, 64, 77)] (B, H, S, D, S_kv)."""
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


def _param(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:      # a bare string
        pass
    return name, value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m flashcore", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{list,check,bench,profile,sweep,library,live}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("kernel", help="registered kernel id(s), comma-separated (see `list`), or triton_attention")
    common.add_argument("--shape", required=True, type=parse_shape_arg, metavar="B,H,S,D[,S_kv][;...]",
                        help="problem shape(s); D must be 64")
    common.add_argument("--mode", choices=("auto", "live", "replay"), default="auto",
                        help="live: measure on this GPU and record; replay: print the newest recorded rows")
    common.add_argument("--seed", type=int, default=0, help="input seed (each shape adds its index)")
    common.add_argument("--runs-dir", default=None, help="where records go (default: the repository's runs/)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser("check", parents=[common], help="correctness against the fp64 reference")
    c.add_argument("--runs", type=int, default=3, help="launches per check (determinism)")
    b = sub.add_parser("bench", parents=[common], help="check, then time beside the SDPA peers")
    b.add_argument("--samples", type=int, default=50)
    b.add_argument("--launches-per-graph", type=int, default=20)
    b.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                   help=f"SDPA backends timed in the same process ({','.join(SDPA_NAMES)}; empty for none)")
    p = sub.add_parser("profile", parents=[common], help="one Nsight Compute report of the kernel")
    p.add_argument("--set", default=None, dest="ncu_set", help="ncu --set (basic, detailed, full)")
    p.add_argument("--sections", default=None, help="comma-separated ncu sections (default: what the book reads)")
    sub.add_parser("list", help="the kernel registry and the dispatch rule's choices")
    s = sub.add_parser("sweep", help="the library's GPU sweep: fuzz vs fp64 + compute-sanitizer, one record")
    s.add_argument("--quick", action="store_true", help="12 fuzz cases per kernel, memcheck only (a smoke test)")
    s.add_argument("--cases", type=int, default=None, help="fuzz cases per kernel (default 200)")
    s.add_argument("--tools", default=None, help="comma-separated sanitizer tools (default: all four)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--budget", type=float, default=None, help="seconds the sweep may take (default 540, quick 200)")
    s.add_argument("--workers", type=int, default=8, help="compute-sanitizer processes at a time")
    s.add_argument("--smoke-kernel", default=None, help="kernel for the library-call smoke test")
    s.add_argument("--kernels", default=None, metavar="ID,ID", dest="fuzz_kernels",
                   help="kernels to fuzz (default: flashcore and the Triton peer); a Hopper kernel is fuzzed through "
                        "the call forced to it (kernel=<id>), over the library-level features that reach it")
    s.add_argument("--sanitize", default=None, metavar="ID,ID", dest="sanitize_kernels",
                   help="kernels to run compute-sanitizer on (default: every registered kernel; empty: none)")
    s.add_argument("--no-progress", action="store_true")
    lb = sub.add_parser("library", help="the library call as users meet it: eager cost vs SDPA, torch.compile, "
                                        "CUDA graphs, threads, devices, features vs cuDNN — one record")
    lb.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                    help="override a default of flashcore.library_bench.DEFAULTS (e.g. calls=300)")
    lb.add_argument("--runs-dir", default=None, help="where the record goes (default: the repository's runs/)")
    lv = sub.add_parser("live", help="one chapter's live measurements into a record, without Jupyter")
    lv.add_argument("notebook", help="a chapter notebook stem, e.g. 03_v8_optimization")
    lv.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE")
    return ap


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.command in MEASURING:
        args.kernels = [k for k in args.kernel.split(",") if k]
        if not args.kernels:
            ap.error("no kernel given")
        if args.command == "profile" and len(args.kernels) > 1:
            ap.error("profile takes one kernel")
    if args.command == "check" and args.runs < 1:
        ap.error(f"--runs must be ≥ 1, got {args.runs}")
    if args.command == "bench":
        if args.samples < 3:
            ap.error(f"--samples must be ≥ 3, got {args.samples}")
        if args.launches_per_graph < 1:
            ap.error(f"--launches-per-graph must be ≥ 1, got {args.launches_per_graph}")
        args.peers = [p for p in args.peers.split(",") if p]
        bad = [p for p in args.peers if p not in SDPA_NAMES]
        if bad:
            ap.error(f"--peers: {', '.join(bad)} not in {', '.join(SDPA_NAMES)}")
    if args.command == "sweep":
        if args.cases is not None and args.cases < 1:
            ap.error(f"--cases must be ≥ 1, got {args.cases}")
        if args.workers < 1:
            ap.error(f"--workers must be ≥ 1, got {args.workers}")
        from .tools.sanitize import TOOLS

        args.tools = [t for t in args.tools.split(",") if t] if args.tools else None
        known = {sp.id for sp in kernels.all_specs()} | {"triton_attention"}
        for flag, dest in (("kernels", "fuzz_kernels"), ("sanitize", "sanitize_kernels")):
            raw = getattr(args, dest)
            ids = None if raw is None else [k.strip() for k in raw.split(",") if k.strip()]
            bad = [k for k in ids or () if k not in known]
            if bad:
                ap.error(f"--{flag}: unknown kernel {', '.join(bad)}")
            if flag == "kernels" and ids is not None and not ids:
                ap.error("--kernels: no kernel given")
            if flag == "sanitize" and "triton_attention" in (ids or ()):
                ap.error("--sanitize: triton_attention is not a registered CUDA kernel")
            setattr(args, "fuzz_ids" if flag == "kernels" else "sanitize_ids", ids)
        for t in args.tools or ():
            if t not in TOOLS:
                ap.error(f"--tools: {t!r} is not one of {', '.join(TOOLS)}")
    return args


def resolve_kernel(name: str, command: str, specs=None) -> str:
    """The kernel id to run, or a :class:`CliError` that lists what exists."""
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
            raise CliError(f"{name} is a control kernel ({spec.idea}): it does not compute attention, so the "
                           "attention check does not apply; chapter 2 checks it against its own reference")
        return name
    known = ", ".join(ids) if ids else "none registered yet"
    raise CliError(f"unknown kernel {name!r}: expected a registered kernel id ({known})"
                   + (f" or {TRITON_ID}" if command != "profile" else ""))


def check_shape(kernel: str, shape: tuple, specs=None) -> Optional[str]:
    """Why the kernel cannot run the shape (``S_q != S_kv`` without ``cross``), or None."""
    if kernel == TRITON_ID:
        return None
    spec = {s.id: s for s in (kernels.all_specs() if specs is None else specs)}[kernel]
    B, H, S, D, S_kv = shape
    if S != S_kv and not spec.cross:
        return f"{kernel} needs S_q == S_kv (cross=False), got S={S}, S_kv={S_kv}"
    return None


# --------------------------------------------------------------------------------------------- measurement
def contender(kernel: str):
    """The harness's contender for a kernel id or the Triton peer."""
    from .harness import measure

    if kernel == TRITON_ID:
        c = measure.triton()
        if c is None:
            raise CliError("triton_attention needs Triton, which does not import here", code=1)
        return c
    return measure.kernel(kernel)


def measure_check(run, kernel_ids: Sequence[str], shapes: Sequence[tuple], seed: int, runs: int = 3,
                  progress: bool = True) -> list:
    """One check row per (kernel, shape), stage "check"."""
    from .harness.check import check_kernel
    from .harness.progress import bar

    rows = []
    for kid in kernel_ids:
        c = contender(kid)
        for i, (B, H, S, D, S_kv) in enumerate(bar(shapes, f"check {kid}", progress and len(shapes) > 1,
                                                   unit="shape")):
            chk = check_kernel(c.launch, B, H, S, D, seed=seed + i, runs=runs, S_kv=S_kv, kernel=kid)
            rows.append(run.add_result(kid, B, H, S, D, S_kv=S_kv, check=chk, stage="check",
                                       **(c.fields((B, H, S, S_kv)) if kid == TRITON_ID else {})))
    return rows


def measure_bench(run, kernel_ids: Sequence[str], shapes: Sequence[tuple], seed: int, samples: int = 50,
                  launches_per_graph: int = 20, peers: Sequence[str] = DEFAULT_PEERS, progress: bool = True) -> list:
    """Check, then time beside the peers (one routine: harness.measure.check_then_time), per shape."""
    from .harness import measure
    from .harness.progress import bar

    contenders = [contender(k) for k in kernel_ids] + [measure.sdpa(p) for p in peers]
    rows = []
    for i, (B, H, S, D, S_kv) in enumerate(bar(shapes, "bench", progress and len(shapes) > 1, unit="shape")):
        got = measure.check_then_time(run, contenders, B, H, S, D, S_kv, samples=samples, lpg=launches_per_graph,
                                      seed=seed + i, check_seed=seed + i, check_runs=2, stage="bench")
        rows += list(got.values())
    return rows


PROFILE_FIELDS = ("duration_us", "sm_throughput_pct", "dram_throughput_pct", "tensor_pipe_pct",
                  "achieved_occupancy_pct", "registers_per_thread")


def measure_profile(run, kernel: str, shapes: Sequence[tuple], ncu_set: Optional[str] = None,
                    sections: Optional[Sequence[str]] = None) -> list:
    """One ncu report for all shapes; a row per shape with the tidy metrics (``profiled`` False if missing)."""
    from .tools import profile

    spec = ";".join(",".join(map(str, s)) for s in shapes)
    rep = profile.ncu_profile(run.dir / f"{kernel}.ncu-rep", kernels=[kernel], shapes=spec,
                              **({"ncu_set": ncu_set} if ncu_set else {"sections": sections or profile.BOOK_SECTIONS}))
    tidy = profile.rows_for(profile.read_report(rep), kernel)
    rows = []
    for shape in shapes:
        B, H, S, D, S_kv = shape
        label = ",".join(map(str, shape))
        match = next((r for r in tidy if r.get("launch_label", "").split(" ")[-1] == label), None)
        rows.append(run.add_result(kernel, B, H, S, D, S_kv=S_kv, ncu_report=run.rel(rep), stage="profile",
                                   profiled=match is not None, **{f: (match or {}).get(f) for f in PROFILE_FIELDS}))
    return rows


def replay(args, runs_dir=None) -> tuple:
    """(rows, [record paths]): per kernel and shape, the newest recorded row with what the command shows."""
    need = {"check": "passed", "bench": "median_us", "profile": "ncu_report"}[args.command]
    recs = sorted(records.all_records(runs_dir or RUNS_DIR), key=lambda r: (r["provenance"].get("date", ""),
                                                                           r["run_id"]), reverse=True)
    rows, paths, missing = [], [], []
    for kid in args.kernels:
        for shape in args.shape:
            found = next(((rec, r) for rec in recs for r in rec.get("results", [])
                          if r["kernel"] == kid and _shape_of(r) == shape and r.get(need) is not None), None)
            if not found:
                missing.append(f"{kid} at {','.join(map(str, shape))}")
                continue
            rec, row = found
            rows.append(dict(row, record=str(rec.path)))
            if args.command == "bench":      # the peers timed beside it in the same run
                rows += [dict(r, record=str(rec.path)) for r in rec.get("results", [])
                         if r["kernel"].startswith("sdpa_") and _shape_of(r) == shape]
            paths.append(str(rec.path))
    if missing:
        raise CliError(f"no recorded {args.command} row of {'; '.join(missing)} under {runs_dir or RUNS_DIR}: "
                       "run it live on a GPU (--mode live)", code=1)
    return rows, sorted(set(paths))


def _shape_of(r: dict) -> tuple:
    return (r["B"], r["H"], r["S"], r["D"], r.get("S_kv", r["S"]))


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
            line[-1] += f"  ({r['error'][:200]})"
        cells.append(line)
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(out)


def list_text(specs=None) -> str:
    """The registry and the dispatch rule's choices, as text."""
    specs = kernels.all_specs() if specs is None else list(specs)
    lines = [f"Registered kernels ({len(specs)}):"]
    if not specs:
        lines.append("  (none registered yet: flashcore/specs/ declares none)")
    for s in sorted(specs, key=lambda s: (s.chapter, s.id)):
        flags = [f for f, on in (("cross", s.cross), ("expect_failure", s.expect_failure),
                                 ("control", kernels.is_control(s))) if on]
        lines.append(f"  {s.id:<28} {s.source:<36} chapter={s.chapter or '-':<20} threads={s.threads:<4}"
                     + (f" [{', '.join(flags)}]" if flags else ""))
    lines += ["", "Dispatch rule of flashcore.attention (flashcore.dispatch.choose; sm_90, 132 SMs, B=1, H=8):"]
    for r in dispatch.route_table():
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
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "live":
        return _live_chapter(args)
    if args.command == "library":
        return _library(args, provenance)
    args.kernels = [resolve_kernel(k, args.command) for k in args.kernels]
    for kid in args.kernels:
        for shape in args.shape:
            problem = check_shape(kid, shape)
            if problem:
                raise CliError(problem)
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
    params = dict(command=args.command, kernels=args.kernels, shapes=[list(s) for s in args.shape], seed=args.seed)
    params.update({k: getattr(args, k) for k in ("runs", "samples", "launches_per_graph", "peers", "ncu_set",
                                                 "sections") if hasattr(args, k)})
    run = records.Run(NOTEBOOK, params=params, command="python -m flashcore " + " ".join(argv), runs_dir=runs_dir,
                      provenance=provenance)
    progress = not args.no_progress
    if args.command == "check":
        rows = measure_check(run, args.kernels, args.shape, args.seed, runs=args.runs, progress=progress)
    elif args.command == "bench":
        rows = measure_bench(run, args.kernels, args.shape, args.seed, samples=args.samples,
                             launches_per_graph=args.launches_per_graph, peers=args.peers, progress=progress)
    else:
        rows = measure_profile(run, args.kernels[0], args.shape, ncu_set=args.ncu_set,
                               sections=args.sections.split(",") if args.sections else None)
    path = run.save()
    print(format_table(rows, COLUMNS[args.command]))
    print(f"recorded {path}")
    failed = [r for r in rows if r.get("passed") is False or r.get("profiled") is False or r.get("error")]
    return 1 if failed else 0


def _sweep(args) -> int:
    from . import sweep

    path, verdict = sweep.run_sweep(quick=args.quick, cases=args.cases, tools=args.tools, seed=args.seed,
                                    progress=not args.no_progress, smoke_kernel=args.smoke_kernel,
                                    fuzz_ids=args.fuzz_ids, sanitize_ids=args.sanitize_ids,
                                    budget=args.budget or (200 if args.quick else 540), workers=args.workers)
    rec = records.load(path)
    print(f"recorded {path}")
    for r in sweep.status_rows(rec):
        print(f"  {'ok ' if r['passed'] else 'BAD'} {r['check']:<30} {r['subject']:<24} {r['result']:<16} "
              f"{r['detail']}")
    return 0 if verdict["passed"] else 1


def _library(args, provenance=None) -> int:
    from . import library_bench

    params = dict(args.param)
    unknown = sorted(set(params) - set(library_bench.DEFAULTS))
    if unknown:
        raise CliError(f"--param: unknown {', '.join(unknown)}; known: {', '.join(library_bench.DEFAULTS)}")
    os.environ.setdefault("FLASHCORE_COMMAND", "python -m flashcore library")
    path = library_bench.run_library(params, runs_dir=Path(args.runs_dir) if args.runs_dir else None,
                                     provenance=provenance)
    rec = records.load(path)
    print(f"recorded {path}")
    s = rec["extra"]["summary"]
    for shape, e in s["eager"].items():
        print(f"  eager {shape}: flashcore {e['api_us']:.1f} µs/call, SDPA {e['sdpa_us']:.1f} µs/call, "
              f"ratio {e['ratio']:.2f} (goal ≤ 1.0: {'met' if e['goal_met'] else 'NOT met'}; "
              f"moonshot ≤ 0.5: {'met' if e['moonshot_met'] else 'not met'})")
    for name, ok in s["checks"].items():
        print(f"  {'ok ' if ok else ('-- ' if ok is None else 'BAD')} {name}")
    bad = [k for k, ok in s["features_passed"].items() if not ok]
    print(f"  features checked: {len(s['features_passed'])}, failed: {', '.join(bad) or 'none'}")
    failed = bad or any(ok is False for ok in s["checks"].values())
    return 1 if failed else 0


def _live_chapter(args) -> int:
    from . import book
    from .chapters import CHAPTERS, module

    if args.notebook not in CHAPTERS:
        raise CliError(f"unknown notebook {args.notebook!r}; known: {', '.join(CHAPTERS)}")
    mod = module(args.notebook)
    params = dict(getattr(mod, "DEFAULTS", {}))
    params.update(dict(args.param))
    os.environ.setdefault("FLASHCORE_COMMAND", f"python -m flashcore live {args.notebook}")
    rec = book.chapter(args.notebook, mode="live", measure=mod.measure, params=params, show=False, status=False)
    print(f"recorded {rec.path}")
    for row in rec["results"]:
        print(f"  {row['kernel']:<28} B={row['B']:<3} H={row['H']:<3} S={row['S']:<6} passed={row['passed']!s:<5} "
              f"median_us={row['median_us']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
