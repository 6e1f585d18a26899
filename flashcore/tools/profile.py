"""Why is it that fast? Nsight Compute as a subprocess, its report read back with NVIDIA's ``ncu_report``.

:func:`ncu_profile` runs ``ncu`` on the launch-only driver (``python -m flashcore.tools.driver``) and writes a
``.ncu-rep`` next to the run record. :func:`read_report` turns a report into tidy rows (one per profiled kernel):
duration, speed-of-light throughputs, occupancy, the warp-state (stall) breakdown, memory traffic, tensor-pipe
utilisation and launch statistics. On a CPU machine ``ncu_report`` is the PyPI wheel ``ncu-report``; on the GPU
host it is the module shipped under the Nsight Compute install (``extras/python``).

Note: ncu locks the clocks to base by default, so its durations are longer than graph-replay times. Use ncu for
*why*, the timing module for *how fast*.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

# Tidy name → candidate ncu metric names (the first one present wins).
METRICS = {
    "duration_us": ["gpu__time_duration.sum"],
    "sm_throughput_pct": ["sm__throughput.avg.pct_of_peak_sustained_elapsed"],
    "memory_throughput_pct": ["gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"],
    "dram_throughput_pct": ["gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                            "dram__throughput.avg.pct_of_peak_sustained_elapsed"],
    "l1_throughput_pct": ["l1tex__throughput.avg.pct_of_peak_sustained_active"],
    "l2_throughput_pct": ["lts__throughput.avg.pct_of_peak_sustained_elapsed"],
    "achieved_occupancy_pct": ["sm__warps_active.avg.pct_of_peak_sustained_active"],
    "theoretical_occupancy_pct": ["sm__maximum_warps_per_active_cycle_pct"],
    "tensor_pipe_pct": ["sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
                        "sm__inst_executed_pipe_tensor_op_hmma.avg.pct_of_peak_sustained_active",
                        "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"],
    "xu_pipe_pct": ["sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active"],      # MUFU: exp2
    "fma_pipe_pct": ["sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active"],
    "alu_pipe_pct": ["sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active"],
    "issue_active_pct": ["sm__inst_issued.avg.pct_of_peak_sustained_active",
                         "smsp__issue_active.avg.pct_of_peak_sustained_active"],
    "dram_bytes": ["dram__bytes.sum"],
    "dram_read_bytes": ["dram__bytes_read.sum"],
    "dram_write_bytes": ["dram__bytes_write.sum"],
    "l2_bytes": ["lts__t_bytes.sum"],
    "l2_read_sectors": ["lts__t_sectors_srcunit_tex_op_read.sum"],
    "l2_write_sectors": ["lts__t_sectors_srcunit_tex_op_write.sum"],
    "smem_bank_conflicts": ["l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum"],
    "smem_ld_bank_conflicts": ["l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"],
    "smem_st_bank_conflicts": ["l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"],
    "local_memory_bytes": ["l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum"],
    "grid_size": ["launch__grid_size"],
    "block_size": ["launch__block_size"],
    "registers_per_thread": ["launch__registers_per_thread"],
    "dynamic_smem_per_block": ["launch__shared_mem_per_block_dynamic"],
    "static_smem_per_block": ["launch__shared_mem_per_block_static"],
    "waves_per_sm": ["launch__waves_per_multiprocessor"],
    "sm_count": ["device__attribute_multiprocessor_count"],
    "sms_active_pct": ["sm__cycles_active.avg.pct_of_peak_sustained_elapsed"],
    "sm_cycles_active_avg": ["sm__cycles_active.avg"],
    "elapsed_cycles": ["sm__cycles_elapsed.max", "gpc__cycles_elapsed.max"],
    "sm_clock_hz": ["smsp__cycles_elapsed.avg.per_second", "sm__cycles_elapsed.avg.per_second"],
    "instructions": ["smsp__inst_executed.sum"],
    "occupancy_limit_registers": ["launch__occupancy_limit_registers"],
    "occupancy_limit_shared_mem": ["launch__occupancy_limit_shared_mem"],
    "occupancy_limit_warps": ["launch__occupancy_limit_warps"],
    "occupancy_limit_blocks": ["launch__occupancy_limit_blocks"],
}
STALL_RE = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
# The sections the book reads (every tidy metric above and the stall breakdown), and no more: a --set full report
# is 1.5–12 MB, mostly per-instruction source counters no page shows, and the repository travels to the GPU host
# only under 64 MiB.
BOOK_SECTIONS = ("SpeedOfLight", "MemoryWorkloadAnalysis", "MemoryWorkloadAnalysis_Tables", "Occupancy",
                 "WarpStateStats", "LaunchStats", "ComputeWorkloadAnalysis", "SchedulerStats", "InstructionStats")


def find_ncu() -> str:
    found = shutil.which("ncu")
    if found:
        return found
    for cand in sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu")) + ["/usr/local/cuda/bin/ncu"]:
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError("ncu (Nsight Compute) not found on this machine")


def import_ncu_report():
    """The ``ncu_report`` module: the PyPI wheel, else the copy under the Nsight Compute install."""
    try:
        import ncu_report  # noqa: F401
        return ncu_report
    except ImportError:
        pass
    for path in sorted(glob.glob("/opt/nvidia/nsight-compute/*/extras/python")) + \
            sorted(glob.glob("/usr/local/cuda*/nsight-compute*/extras/python")):
        if path not in sys.path:
            sys.path.append(path)
        try:
            import ncu_report  # noqa: F401
            return ncu_report
        except ImportError:
            continue
    raise ImportError("ncu_report not found: pip install ncu-report (CPU hosts) or install Nsight Compute")


def ncu_profile(out_rep: Path, kernels: Sequence[str] = (), shapes: str = "1,8,512,64", sdpa: Sequence[str] = (),
                empty: bool = False, kernel_regex: Optional[str] = None, ncu_set: str = "full",
                sections: Sequence[str] = (), count: Optional[int] = None, launch_skip: int = 0,
                clock_control: str = "base", timeout: int = 600, extra: Sequence[str] = ()) -> Path:
    """Profile the driver's launches with ncu into ``out_rep`` (``.ncu-rep``). Returns the report path."""
    out_rep = Path(out_rep)
    if out_rep.suffix != ".ncu-rep":
        raise ValueError(f"out_rep must end in .ncu-rep, got {out_rep.name}")
    out_rep.parent.mkdir(parents=True, exist_ok=True)
    cmd = [find_ncu(), "--force-overwrite", "--target-processes", "all", "--clock-control", clock_control,
           "--profile-from-start", "off", "--nvtx",
           "-o", str(out_rep.with_suffix(""))]
    if sections:
        for s in sections:
            cmd += ["--section", s]
    else:
        cmd += ["--set", ncu_set]
    if kernel_regex:
        cmd += ["-k", f"regex:{kernel_regex}"]
    if count:
        cmd += ["-c", str(count)]
    if launch_skip:
        cmd += ["-s", str(launch_skip)]
    cmd += list(extra)
    cmd += [sys.executable, "-m", "flashcore.tools.driver", "--shapes", shapes]
    if kernels:
        cmd += ["--kernels", ",".join(kernels)]
    if sdpa:
        cmd += ["--sdpa", ",".join(sdpa)]
    if empty:
        cmd.append("--empty")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not out_rep.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"ncu failed (exit {proc.returncode}) for {' '.join(cmd)}:\n{tail}")
    return out_rep


def _metric(action, name):
    try:
        m = action.metric_by_name(name)
    except Exception:
        return None
    if m is None:
        return None
    for getter in ("as_double", "as_uint64", "as_string"):
        try:
            return getattr(m, getter)()
        except Exception:
            continue
    return None


def _nvtx_label(action) -> str:
    """The innermost NVTX push/pop range around this launch (the driver names each launch ``<id> <shape>``)."""
    try:
        state = action.nvtx_state()
        labels = []
        for dom_id in state.domains():
            dom = state.domain_by_id(dom_id)
            labels += list(dom.push_pop_ranges())
        return labels[-1] if labels else ""
    except Exception:
        return ""


def tidy_action(action) -> dict:
    """One profiled kernel → a flat dict of the metrics in :data:`METRICS` plus ``stall_<reason>`` ratios."""
    row = {"kernel_name": action.name()}
    try:
        row["kernel_name_demangled"] = action.name(action.NameBase_DEMANGLED)
    except Exception:
        row["kernel_name_demangled"] = row["kernel_name"]
    for tidy, candidates in METRICS.items():
        row[tidy] = None
        for c in candidates:
            val = _metric(action, c)
            if val is not None:
                row[tidy] = val
                break
    if row["duration_us"] is not None:
        row["duration_us"] = row["duration_us"] / 1e3   # ncu reports ns
    row["launch_label"] = _nvtx_label(action)
    try:
        names = list(action.metric_names())
    except Exception:
        names = []
    for n in names:
        m = STALL_RE.match(n)
        if m and not m.group(1).endswith("_pred_on") and "not_issued" not in m.group(1):
            row[f"stall_{m.group(1)}"] = _metric(action, n)
    return row


def read_report(path) -> list:
    """All profiled kernels of a ``.ncu-rep`` as tidy rows (dicts), in launch order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Nsight Compute report at {path}")
    ncu_report = import_ncu_report()
    ctx = ncu_report.load_report(str(path))
    rows = []
    for r in range(ctx.num_ranges()):
        rng = ctx.range_by_idx(r)
        for a in range(rng.num_actions()):
            row = tidy_action(rng.action_by_idx(a))
            row["index"] = len(rows)
            rows.append(row)
    return rows


def rows_for(rows: list, kernel_id: str) -> list:
    """The report rows launched under ``kernel_id`` by the driver (NVTX label ``<id> <shape>``)."""
    return [r for r in rows if r.get("launch_label", "").split(" ")[0] == kernel_id]


def stall_breakdown(row: dict) -> dict:
    """{reason: warps stalled per issued instruction} from a tidy row, largest first, zeros dropped."""
    stalls = {k[len("stall_"):]: v for k, v in row.items() if k.startswith("stall_") and v}
    return dict(sorted(stalls.items(), key=lambda kv: -kv[1]))
