"""GPU session script for the v8_05+ ladder steps (flashcore/specs/v8_mma.py): variants by -D defines, devcheck,
ncu sections and sanitizers in one process tree. Usage on the GPU host:

    python3 scripts/v8_mma_sweep.py --out $OUT [--ncu id,id] [--sanitize id,id]
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flashcore import kernels  # noqa: E402
from flashcore.devcheck import devcheck, print_table  # noqa: E402
from flashcore.driver import parse_shapes  # noqa: E402
from flashcore.specs import v8_mma  # noqa: E402

MISSION = "1,8,512,64"
SHAPES = "1,8,512,64;1,8,1000,64;1,1,1,64;2,3,77,64;4,16,4096,64;1,8,512,64,1000;1,2,100,64,300;1,4,300,64,7"


def variant(base_id, tag, defines=(), **changes):
    spec = kernels.get(base_id)
    defs = dict(spec.defines)
    defs.update(dict(defines))
    v = dataclasses.replace(spec, id=f"{base_id}@{tag}", defines=tuple(defs.items()), **changes)
    kernels._collect()[v.id] = v
    return v.id


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    ap.add_argument("--main", default="v8_05_mma_registers,v8_06_cluster_splitkv")
    ap.add_argument("--variants", default="")   # python literal list of (base, tag, defines, grid_cluster, stages)
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--var-big", default="4,16,4096,64")
    ap.add_argument("--ncu", default="")
    ap.add_argument("--ncu-shapes", default=MISSION)
    ap.add_argument("--sanitize", default="")
    ap.add_argument("--san-shapes", default="1,8,512,64;2,3,77,64;1,2,100,64,300")
    ap.add_argument("--samples", type=int, default=30)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    main_ids = [k for k in a.main.split(",") if k]
    var_ids = []
    for base, tag, defines, cluster, stages in (eval(a.variants) if a.variants else []):
        changes = {}
        if stages or cluster:
            bm = v8_mma.BLOCK_M2 if base in ("v8_09_two_mtiles", "v8_10_mbarrier_combine", "flashcore") else v8_mma.BLOCK_M
            cl, st = cluster or v8_mma.CLUSTER, stages or 2
            changes["grid"] = v8_mma.grid_cluster(cl, block_m=bm)
            if base in ("v8_05_mma_registers", "v8_06_cluster_splitkv"):
                changes["smem_bytes"] = v8_mma.smem_ring(st)
            elif base == "v8_10_mbarrier_combine":
                changes["smem_bytes"] = v8_mma.smem_ring_landing_mbar(st, cl, block_m=bm)
            else:
                changes["smem_bytes"] = v8_mma.smem_ring_landing(st, cl, block_m=bm)
        var_ids.append(variant(base, tag, defines, **changes))
    rows = []
    if var_ids:
        print("=== variants at the mission shape", flush=True)
        r = devcheck(main_ids + var_ids, parse_shapes(MISSION + ";2,3,77,64;1,8,1000,64;" + a.var_big),
                     samples=a.samples, time_shapes=parse_shapes(MISSION + ";" + a.var_big))
        print_table(r)
        rows += [dict(x, part="variants") for x in r]
    print(f"=== main kernels, all shapes ({time.time() - t0:.0f} s)", flush=True)
    r = devcheck(main_ids, parse_shapes(a.shapes), samples=a.samples,
                 time_shapes=parse_shapes(MISSION + ";4,16,4096,64;1,8,1000,64"))
    print_table(r)
    rows += [dict(x, part="main") for x in r]
    (out / "dev.json").write_text(json.dumps(rows, indent=1, default=str))
    if a.ncu:
        from flashcore.profile import ncu_profile, read_report, rows_for, stall_breakdown
        print(f"=== ncu ({time.time() - t0:.0f} s)", flush=True)
        rep = out / "v8mma.ncu-rep"
        try:
            ncu_profile(rep, kernels=a.ncu.split(","), shapes=a.ncu_shapes, timeout=150,
                        sections=["SpeedOfLight", "WarpStateStats", "Occupancy", "LaunchStats",
                                  "ComputeWorkloadAnalysis", "MemoryWorkloadAnalysis", "SchedulerStats"])
            keys = ["duration_us", "sm_throughput_pct", "memory_throughput_pct", "dram_throughput_pct",
                    "l2_throughput_pct", "tensor_pipe_pct", "issue_active_pct", "achieved_occupancy_pct",
                    "theoretical_occupancy_pct", "sms_active_pct", "smem_bank_conflicts", "grid_size",
                    "registers_per_thread", "waves_per_sm", "elapsed_cycles", "sm_clock_hz", "dram_bytes"]
            for row in read_report(rep):
                print(row.get("launch_label"), {k: row.get(k) for k in keys})
                print("   stalls:", {k: round(v, 2) for k, v in list(stall_breakdown(row).items())[:8]})
        except Exception as exc:
            print("ncu failed:", str(exc)[-3000:])
    if a.sanitize:
        print(f"=== sanitizers ({time.time() - t0:.0f} s)", flush=True)
        for tool in ("memcheck", "racecheck"):
            cmd = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "9", sys.executable, "-m",
                   "flashcore.driver", "--kernels", a.sanitize, "--shapes", a.san_shapes]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                print(f"{tool}: TIMEOUT (60 s)", flush=True)
                continue
            tail = "\n".join(ln for ln in (p.stdout + p.stderr).splitlines() if "FLASHCORE-LAUNCH" not in ln)
            tail = "\n".join(tail.splitlines()[-8:])
            print(f"{tool}: exit {p.returncode}\n{tail}", flush=True)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
