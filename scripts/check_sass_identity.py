"""Prove that moving the kernels changed no machine code: for every kernel id, the SASS of its build at a baseline
commit against the SASS of its build in the working tree.

The baseline (default ``b4ede6e``, the last commit before issue 13's consolidation) is read with ``git archive``:
its own registry says which file, entry and ``-D`` flags each id was built from (``v12_only_vec`` was
``v12_baseline.cu`` with ``-DV12_VEC_LOADS=1``, ``flashcore`` was ``v8_07_dsmem_push.cu`` with ``-DCLUSTER=2
-DSTAGES=3``, ...). Both builds go through :func:`flashcore.compile.nvcc_compile` (``nvcc -cubin -arch=sm_90 -O3
-std=c++17 -lineinfo``), both are disassembled with ``cuobjdump -sass``; addresses, encodings and comments are
dropped and each function's instruction list is compared, the entry's new name mapped to its old one. Build modes
that are not ids (``v11_fixed`` with ``-DV11_DRAIN=1``) are checked too.

One difference is not code: ``c[0x4][…]`` holds the addresses of a module's global objects, so the new
``<entry>_smem_bytes`` variable can move the slots of a kernel's string literals (v11_fixed_mbarrier's printf) by 8
bytes; a build whose only difference is such a slot is reported as identical "but for c[0x4] slots".

Ids in :data:`EXPECTED` may differ: their kernels gained an argument on purpose (the explicit split-KV decision).
For them the script prints the instruction counts, registers, the changed lines of the textual diff (which counts
every register renaming ptxas makes once a few instructions are added) and the net change per opcode (which does
not: what was added or removed); ``--show`` prints the diff. Any other difference fails (exit 1).

``--compiler nvrtc`` compiles both builds the way they run instead: ``compile.nvrtc_compile`` for sm_90 (NVRTC with
``-ftz=true``; needs libnvrtc, not a GPU — e.g. the ``nvidia-cuda-nvrtc`` wheel's folder on LD_LIBRARY_PATH).

``--family hopper`` checks kernels/hopper/ instead (not through the registry: its builds are files and ``-D`` knobs):
each kernel, the WATCHDOG builds of 02–05 and flashcore_hopper's knobs, built by nvcc for ``sm_90a`` (``-gencode=
arch=compute_90a,code=sm_90a``, what tests/test_tma.py builds) from ``kernels/`` at the base (default ``HEAD``,
read with ``git archive``) and in the working tree. Besides the verdict it prints each new build's ptxas registers
and spills and fails on a spill or a C7515 / C7519 / C7508 warning (wgmma serialised, warpgroup.arrive injected,
setmaxnreg ignored). A build whose instructions differ only in constant-bank offsets or relocated symbol names is
reported as "differs only in symbol/address operands".

    python scripts/check_sass_identity.py [--base b4ede6e] [--only v8_07_dsmem_push,flashcore] [--show] [-j 8]
                                          [--compiler nvcc|nvrtc]
    python scripts/check_sass_identity.py --family hopper [--base HEAD] [--only flashcore_hopper] [--show]
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flashcore import kernels  # noqa: E402
from flashcore.compile import nvcc_compile, nvrtc_compile  # noqa: E402
from flashcore.tools.sass import sass_of  # noqa: E402

BASE = "b4ede6e"
# Ids whose kernels changed on purpose, and why. Everything else must be instruction-for-instruction identical.
EXPECTED = {
    kid: "takes `int split` (the launcher's split-KV decision) instead of inferring it from gridDim.x, and traps "
         "on a launch whose grid or shared memory disagrees with it (check_split_launch, once the prologue's loads are "
         "in flight). Same outputs bit for bit; times within ±1% of the old build except v8_06 (−9% at B2 H16 S1024) "
         "and v8_10 (+1–2%) — H200, CUDA-graph replay, kernels/README.md"
    for kid in ("v8_06_cluster_splitkv", "v8_07_dsmem_push", "v8_08_kv_wait_split", "v8_09_two_mtiles",
                "v8_10_mbarrier_combine", "flashcore")
}
# Build modes that are not ids: (id, extra -D flags) built at both commits.
MODES = [("v11_fixed", (("V11_DRAIN", "1"),))]

_LIST_SPECS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from flashcore import kernels
print(json.dumps([dict(id=s.id, source=s.source, entry=s.entry, defines=[list(d) for d in s.defines])
                  for s in kernels.all_specs()]))
"""


def baseline_specs(base: str, into: Path) -> dict:
    """Extract ``flashcore/`` and ``kernels/`` of ``base`` into ``into``; {id: old spec fields} from its registry."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", base, "flashcore", "kernels"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    out = subprocess.run([sys.executable, "-c", _LIST_SPECS, str(into)], check=True, capture_output=True,
                         text=True, cwd=into).stdout
    return {d["id"]: d for d in json.loads(out)}


_INSTR = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;")


def functions(sass: str) -> dict:
    """{function name: [instruction, ...]} with addresses, encodings and comments dropped."""
    chunks = re.split(r"\n\s*Function\s*:\s*", "\n" + sass)[1:]
    return {name.strip(): [re.sub(r"\s+", " ", i) for i in _INSTR.findall(rest)]
            for name, _, rest in (c.partition("\n") for c in chunks)}


def _mask_slots(fns: dict) -> dict:
    """The same instructions with the c[0x4] slot numbers (addresses of global objects) masked."""
    return {name: [re.sub(r"c\[0x4\]\[0x[0-9a-f]+\]", "c[0x4][*]", i) for i in body] for name, body in fns.items()}


def _opcode(instr: str) -> str:
    """The mnemonic of one instruction, predicate dropped (``@!P0 BRA 0x1a0`` → ``BRA``)."""
    parts = instr.split()
    return parts[1] if parts[0].startswith("@") and len(parts) > 1 else parts[0]


def compare(old: dict, new: dict, old_entry: str, new_entry: str):
    """(instructions in the new build, [(function, diff lines)]) after mapping the entry's name."""
    new = {old_entry if name == new_entry else name: body for name, body in new.items()}
    diffs = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, []), new.get(name, [])
        if a != b:
            diffs.append((name, list(difflib.unified_diff(a, b, "old", "new", n=1, lineterm=""))))
    return sum(len(b) for b in new.values()), diffs


def build(spec, old: dict, base_dir: Path, extra: tuple, out_dir: Path, compiler: str):
    """(old cubin, new cubin, old registers, new registers) of one id: nvcc (the CPU path) or NVRTC (the GPU path)."""
    old_src = base_dir / "kernels" / old["source"]
    old_defines = tuple(tuple(d) for d in old["defines"]) + tuple(extra)
    if compiler == "nvrtc":
        old_spec = dataclasses.replace(spec, source=str(old_src), entry=old["entry"], defines=old_defines, split=None)
        return nvrtc_compile(old_spec, "sm_90"), nvrtc_compile(spec, "sm_90", extra), None, None
    old_rep = nvcc_compile(old_src, defines=old_defines, out_dir=out_dir)
    new_rep = nvcc_compile(spec, defines=extra, out_dir=out_dir)
    return old_rep.cubin, new_rep.cubin, old_rep.registers, new_rep.registers


def check(kid: str, extra: tuple, old_specs: dict, base_dir: Path, out_dir: Path, compiler: str = "nvcc") -> dict:
    spec = kernels.get(kid)
    old = old_specs[kid]
    old_cubin, new_cubin, old_regs, new_regs = build(spec, old, base_dir, extra, out_dir, compiler)
    old_fns, new_fns = functions(sass_of(old_cubin)), functions(sass_of(new_cubin))
    n, diffs = compare(old_fns, new_fns, old["entry"], spec.entry)
    n_old = sum(len(b) for b in old_fns.values())
    changed = sum(sum(1 for line in d if line[:1] in "+-" and line[:3] not in ("+++", "---")) for _, d in diffs)
    slots_only = bool(diffs) and not compare(_mask_slots(old_fns), _mask_slots(new_fns), old["entry"], spec.entry)[1]
    opcodes = lambda fns: Counter(_opcode(i) for body in fns.values() for i in body)
    delta = opcodes(new_fns)
    delta.subtract(opcodes(old_fns))
    label = kid + "".join(f" -D{k}={v}" for k, v in extra)
    old_build = old["source"] + "".join(f" -D{k}={v}" for k, v in old["defines"])
    return dict(id=label, kid=kid, old=old_build, new=spec.source + "".join(f" -D{k}={v}" for k, v in spec.defines),
                instructions=(n_old, n), changed=changed, diffs=diffs, regs=(old_regs, new_regs),
                opcodes={k: v for k, v in sorted(delta.items()) if v}, slots_only=slots_only)


# ------------------------------------------------------------------------------------------------ the Hopper family
HOPPER_ARCH = "-gencode=arch=compute_90a,code=sm_90a"
# (file stem, -D flags): every kernel, the WATCHDOG builds of 02–05, flashcore_hopper's knobs.
HOPPER_BUILDS = [(s, ()) for s in ("hopper_01_wgmma", "hopper_02_tma", "hopper_03_warpspec", "hopper_04_overlap",
                                   "flashcore_hopper", "probe_wgmma_tma")] + \
    [(s, ("WATCHDOG",)) for s in ("hopper_02_tma", "hopper_03_warpspec", "hopper_04_overlap", "flashcore_hopper")] + \
    [("flashcore_hopper", (d,)) for d in ("NUM_CONSUMERS=2", "EXP2_FMA_EVERY=4", "STAGES=2")]
HOPPER_WARNINGS = ("C7515", "C7519", "C7508")


def _nvcc() -> str:
    from flashcore.compile import CUDA_HOME

    return str(CUDA_HOME / "bin" / "nvcc")


def hopper_build(kernels_dir: Path, stem: str, defines: tuple, out_dir: Path, tag: str) -> dict:
    """nvcc -cubin for sm_90a of kernels_dir/hopper/<stem>.cu: {cubin, log, regs {entry: n}, spills, warnings}."""
    cubin = out_dir / f"{tag}-{stem}{''.join('-' + d for d in defines)}.cubin"
    cmd = [_nvcc(), "-cubin", HOPPER_ARCH, "-O3", "-std=c++17", "-Xptxas", "-v", f"-I{kernels_dir}",
           *[f"-D{d}" for d in defines], str(kernels_dir / "hopper" / f"{stem}.cu"), "-o", str(cubin)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = p.stdout + p.stderr
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}\n{log}")
    regs, entry = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        entry = m.group(1) if m else entry
        m = re.search(r"Used (\d+) registers", line)
        if m and entry:
            regs[entry] = int(m.group(1))
    spills = sum(int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log))
    return dict(cubin=cubin, log=log, regs=regs, spills=spills, warnings=[w for w in HOPPER_WARNINGS if w in log])


def _mask_operands(fns: dict) -> dict:
    """The same instructions with constant-bank offsets and relocated symbol names masked."""
    def one(i):
        i = re.sub(r"c\[0x[0-9a-f]+\]\[0x[0-9a-f]+\]", "c[*][*]", i)
        return re.sub(r"\(\s*[A-Za-z_$.][\w$.]*\s*\)", "(*)", i)
    return {name: [one(i) for i in body] for name, body in fns.items()}


def hopper_check(stem: str, defines: tuple, base_dir: Path, out_dir: Path) -> dict:
    old = hopper_build(base_dir / "kernels", stem, defines, out_dir, "old")
    new = hopper_build(ROOT / "kernels", stem, defines, out_dir, "new")
    old_fns, new_fns = functions(sass_of(old["cubin"])), functions(sass_of(new["cubin"]))
    diffs = [(n, list(difflib.unified_diff(old_fns.get(n, []), new_fns.get(n, []), "old", "new", n=1, lineterm="")))
             for n in sorted(set(old_fns) | set(new_fns)) if old_fns.get(n) != new_fns.get(n)]
    masked_o, masked_n = _mask_operands(old_fns), _mask_operands(new_fns)
    operands_only = bool(diffs) and all(masked_o.get(n) == masked_n.get(n) for n, _ in diffs)
    changed = sum(sum(1 for line in d if line[:1] in "+-" and line[:3] not in ("+++", "---")) for _, d in diffs)
    return dict(id=stem + "".join(f" -D{d}" for d in defines), old=old, new=new, diffs=diffs, changed=changed,
                operands_only=operands_only, instructions=(sum(map(len, old_fns.values())),
                                                           sum(map(len, new_fns.values()))))


def hopper_main(args) -> int:
    only = [k for k in args.only.split(",") if k]
    jobs = [(s, d) for s, d in HOPPER_BUILDS if not only or s in only]
    base = args.base if args.base != BASE else "HEAD"
    with tempfile.TemporaryDirectory(prefix="sass-identity-hopper-") as tmp:
        base_dir, out_dir = Path(tmp) / "base", Path(tmp) / "cubins"
        base_dir.mkdir()
        out_dir.mkdir()
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", base, "kernels"], check=True,
                              capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(blob)) as tar:
            tar.extractall(base_dir, filter="data")
        with ThreadPoolExecutor(args.j) as pool:
            rows = list(pool.map(lambda j: hopper_check(j[0], j[1], base_dir, out_dir), jobs))
    w = max(len(r["id"]) for r in rows)
    print(f"SASS at {base} vs the working tree (nvcc sm_90a; instructions, registers old/new per entry, spills, "
          f"result)")
    print(f"{'build':<{w}}  {'instructions':>12}  {'registers':>16}  {'spills':>6}  result")
    failed = []
    for r in rows:
        if not r["diffs"]:
            verdict = "identical"
        elif r["operands_only"]:
            verdict = f"differs only in symbol/address operands ({r['changed']} lines)"
        else:
            verdict = f"DIFFERS by {r['changed']} lines"
            failed.append(r["id"])
        if r["new"]["spills"] or r["new"]["warnings"]:
            verdict += f"; spills {r['new']['spills']} B, warnings {r['new']['warnings']}"
            failed.append(r["id"])
        regs = ",".join(f"{r['old']['regs'].get(e, '-')}/{n}" for e, n in sorted(r["new"]["regs"].items()))
        n = r["instructions"]
        count = str(n[1]) if n[0] == n[1] else "%d→%d" % n
        print(f"{r['id']:<{w}}  {count:>12}  {regs:>16}  {r['new']['spills']:>6}  {verdict}")
        if args.show and r["diffs"]:
            for name, diff in r["diffs"]:
                print(f"--- {r['id']}: function {name}")
                print("\n".join(diff))
    print(f"{len(rows) - len(set(failed))}/{len(rows)} builds as expected" +
          (f"; unexpected: {', '.join(dict.fromkeys(failed))}" if failed else ""))
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=BASE, help="baseline commit (default %(default)s; HEAD for --family hopper)")
    ap.add_argument("--family", choices=("registry", "hopper"), default="registry",
                    help="the registry's ids (default) or kernels/hopper/'s sm_90a builds")
    ap.add_argument("--only", default="", help="comma-separated ids (default: every id)")
    ap.add_argument("--show", action="store_true", help="print the instruction diffs")
    ap.add_argument("-j", type=int, default=8, help="parallel compiles")
    ap.add_argument("--compiler", choices=("nvcc", "nvrtc"), default="nvcc",
                    help="nvcc -cubin (the CPU path, default) or NVRTC (the path kernels run from)")
    args = ap.parse_args(argv)
    if args.family == "hopper":
        return hopper_main(args)
    ids = [k for k in args.only.split(",") if k] or [s.id for s in kernels.all_specs()]
    with tempfile.TemporaryDirectory(prefix="sass-identity-") as tmp:
        base_dir, out_dir = Path(tmp) / "base", Path(tmp) / "cubins"
        base_dir.mkdir()
        old_specs = baseline_specs(args.base, base_dir)
        missing = [k for k in ids if k not in old_specs]
        jobs = [(k, ()) for k in ids if k in old_specs] + [(k, e) for k, e in MODES if k in ids]
        with ThreadPoolExecutor(args.j) as pool:
            rows = list(pool.map(lambda j: check(j[0], j[1], old_specs, base_dir, out_dir, args.compiler), jobs))
    w = max(len(r["id"]) for r in rows)
    print(f"SASS at {args.base} vs the working tree ({args.compiler} sm_90; instructions per build, registers, result)")
    print(f"{'id':<{w}}  {'instructions':>12}  {'regs old/new':>12}  result")
    count = lambda r: str(r["instructions"][1]) if r["instructions"][0] == r["instructions"][1] \
        else "%d→%d" % r["instructions"]
    failed = []
    for r in rows:
        if not r["diffs"]:
            verdict = "identical"
        elif r["slots_only"]:
            verdict = f"identical but for c[0x4] slots (string-literal addresses; {r['changed']} lines)"
        elif r["kid"] in EXPECTED:
            ops = ", ".join(f"{k} {v:+d}" for k, v in r["opcodes"].items())
            verdict = f"differs (expected): {r['changed']} diff lines; net opcodes: {ops}"
        else:
            verdict = f"DIFFERS by {r['changed']} lines"
            failed.append(r["id"])
        regs = "%d/%d" % r["regs"] if r["regs"][0] is not None else "-"
        print(f"{r['id']:<{w}}  {count(r):>12}  {regs:>12}  {verdict}")
        if args.show and r["diffs"]:
            for name, diff in r["diffs"]:
                print(f"--- {r['id']}: function {name}")
                print("\n".join(diff))
    reasons: dict = {}
    for kid in sorted({r["kid"] for r in rows if r["diffs"]} & set(EXPECTED)):
        reasons.setdefault(EXPECTED[kid], []).append(kid)
    for reason, kids in reasons.items():
        print(f"expected differences ({', '.join(kids)}): {reason}")
    for k in missing:
        print(f"{k}: not in {args.base}'s registry (a new id: nothing to compare)")
    print(f"{len(rows) - len(failed)}/{len(rows)} builds as expected" + (f"; unexpected: {', '.join(failed)}"
                                                                        if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
