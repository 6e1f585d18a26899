"""Chapter 1's page, drawn from a run record only: v12 as launched, its correctness, compute-sanitizer, its time
beside the SDPA peers, the schedule over B·H, the two ablation ladders, the original estimate beside them, and
Nsight Compute's view.

Sentences that draw a conclusion from numbers are computed here and branch on what the record shows, so the page
stays true on another GPU's record. The original L4 numbers are quoted history (``SEED_*``): the page labels them
as such and never divides one of them by a number of this record except to say how the same kernel moved.
"""
from __future__ import annotations

from typing import Optional

from ... import book, kernels, plots
from ...labels import label
from ...records import Record
from ...specs.v12 import ALONE, BM, BN, LADDER, LADDER_B
from ...tools import profile, sanitize
from ..method.view import us

__all__ = ["SEED_ESTIMATE_L4_US", "SEED_MEASURED_L4_US", "SEED_SDPA_L4_US", "SEED_L4_SMS", "SEED_SHORTCUT_L4_ERR",
           "CAUSES", "CAUSES_B", "RESIDUAL", "SDPA", "ratio", "mission", "headline", "history_text",
           "launch_table", "sweep_rows", "sweep_ok", "correctness_text", "correctness_table", "correctness_dropdown",
           "sanitizer_rows", "sanitizer_table", "sanitizer_logs", "race_demo", "race_text", "timing_rows",
           "timing_table", "timing_text", "drift", "schedule_rows", "schedule_table", "schedule_text",
           "steps_per_cta", "design_text", "ladder_intro_text", "sources_text", "ladder", "ladder_table",
           "ladder_files_table", "breakdown", "explained",
           "explained_text", "alone_rows", "alone_table", "step_latency", "step_latency_table", "both_orders",
           "both_orders_table", "estimate_text", "ncu_rows", "ncu_table", "ncu_text", "stall_table_rows",
           "stall_table", "stall_text", "lessons_text", "plot_schedule", "plot_ladder", "plot_estimate_vs_measured",
           "plot_stalls"]

# Quoted history, NOT measurements of this project: the original assessment (../shared/origin/
# flashcore-v12-honest-assessment.md, Oct 2025, an NVIDIA L4 with 58 SMs). Its *estimated* split of v12's time
# ("Current v12 Bottlenecks"), its measured total, SDPA "@ 30 µs" on the same card, and the shortcut's error.
SEED_ESTIMATE_L4_US = {"barriers (4 per tile)": 44.0, "scalar loads": 165.0, "no overlap": 220.0,
                       "WMMA compute": 110.0, "other (unexplained)": 1000.0}
SEED_MEASURED_L4_US = 1508.0
SEED_SDPA_L4_US = 30.0
SEED_L4_SMS = 58
SEED_SHORTCUT_L4_ERR = 0.173
SEED_ESTIMATE_TILES = 11          # the estimate's "per KV tile × 11 tiles for S=512"

# What each ladder step removes (the cause a step's time delta is charged to)
CAUSES = {"v12_abl_1_grid": "persistent per-head schedule",
          "v12_abl_2_vec": "scalar 2-byte loads",
          "v12_abl_3_softmax": "one serial softmax warp",
          "v12_abl_4_prefetch": "no load/compute overlap"}
CAUSES_B = {"v12_only_softmax": CAUSES["v12_abl_3_softmax"], "v12_only_softmax_vec": CAUSES["v12_abl_2_vec"],
            "v12_abl_3_softmax": CAUSES["v12_abl_1_grid"], "v12_abl_4_prefetch": CAUSES["v12_abl_4_prefetch"]}
RESIDUAL = "what is left: barriers, WMMA via smem, launch"
SDPA = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_default")
GRID, VEC, SOFTMAX, PREFETCH = (CAUSES[k] for k in ("v12_abl_1_grid", "v12_abl_2_vec", "v12_abl_3_softmax",
                                                    "v12_abl_4_prefetch"))
CAUSE_COLORS = {GRID: "#d62728", VEC: "#ff7f0e", SOFTMAX: "#9467bd", PREFETCH: "#2ca02c", RESIDUAL: "#7f7f7f"}
FIX_LABELS = {GRID: "tile grid", VEC: "uint4 loads", SOFTMAX: "warp softmax", PREFETCH: "cp.async"}


# ------------------------------------------------------------------------------------------------ basics
def ratio(x: Optional[float]) -> str:
    """A ratio as the page prints it: two decimals below 10, three significant digits above (what a ±1 % timing
    spread supports)."""
    if x is None:
        return book.MISSING
    return f"{x:.2f}" if x < 10 else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def mission(rec: Record) -> tuple:
    return tuple(rec.ext("shapes")["mission"])


def _shape(rec: Record) -> str:
    B, H, S, D = mission(rec)
    return f"B{B} H{H} S{S}"


def _row(rec: Record, kid: str, role: str = "mission") -> dict:
    B, H, S, D = mission(rec)
    return rec.row(kernel=kid, B=B, H=H, S=S, role=role)


def _t(rec: Record, kid: str) -> float:
    return _row(rec, kid)["median_us"]


def _gpu(rec: Record) -> str:
    return str(rec["provenance"].get("gpu", "this GPU")).replace("NVIDIA ", "")


def _ext(rec: Record, key: str, default):
    return rec["extra"].get(key, default)


def _ladders(rec: Record) -> tuple:
    return _ext(rec, "ladder", LADDER), _ext(rec, "ladder_b", LADDER_B), _ext(rec, "alone", ALONE)


def _tile(rec: Record) -> tuple:
    """The kernels' (query rows, keys) tile: recorded since the consolidation; v12's design facts before it."""
    return tuple(_ext(rec, "tile", (BM, BN)))


def headline(rec: Record) -> dict:
    """v12 against the peers and against its own ladder at the mission shape (same run)."""
    lad, _, _ = _ladders(rec)
    v12, cud, fl = _t(rec, "v12_baseline"), _t(rec, "sdpa_cudnn"), _t(rec, "sdpa_flash")
    grid, last = _t(rec, lad[1]), _t(rec, lad[-1])
    B, H, S, D = mission(rec)
    return dict(v12_us=v12, cudnn_us=cud, flash_us=fl, x_cudnn=v12 / cud, x_flash=v12 / fl, grid_id=lad[1],
                grid_us=grid, grid_x_cudnn=grid / cud, last_id=lad[-1], last_us=last, last_x_cudnn=last / cud,
                speedup_ladder=v12 / last, num_sms=rec.ext("num_sms"), busy_ctas=min(B * H, rec.ext("num_sms")))


def history_text(rec: Record) -> str:
    """The original L4 figure, labelled as quoted history, then what THIS record measures."""
    h = headline(rec)
    return (f"**The original figure (quoted, not measured here):** on an NVIDIA L4 ({SEED_L4_SMS} SMs) the October "
            f"2025 assessment measured v12 at {SEED_MEASURED_L4_US:,.0f} µs against about {SEED_SDPA_L4_US:.0f} µs "
            f"for SDPA on the same card — its \"{SEED_MEASURED_L4_US / SEED_SDPA_L4_US:.0f}× slower than SDPA\". "
            f"**What this record measures**, on {_gpu(rec)} ({h['num_sms']} SMs) at {_shape(rec)}: v12 takes "
            f"**{us(h['v12_us'])} µs**, {ratio(h['x_cudnn'])}× cuDNN's {us(h['cudnn_us'])} µs and "
            f"{ratio(h['x_flash'])}× FlashAttention-2's {us(h['flash_us'])} µs in the same run.")


def launch_table(rec: Record, show: bool = True) -> str:
    """How v12 is launched at the mission shape (from the record: grid, block, dynamic smem, ptxas registers)."""
    g = rec.ext("grids")["v12_baseline"]
    res = (_ext(rec, "resources", {}) or {}).get("v12_baseline", {})
    h = headline(rec)
    rows = [("grid (CTAs launched)", " × ".join(str(x) for x in g["grid"])),
            ("CTAs with work", f"{h['busy_ctas']} of {h['num_sms']} SMs"),
            ("threads per CTA", str(g["block"][0])),
            ("dynamic shared memory", f"{g['smem'] / 1024:.1f} KiB"),
            ("registers per thread (ptxas)", res.get("registers"))]
    return book.table([{"launch": k, f"v12 at {_shape(rec)}": v} for k, v in rows], show=show)


# ------------------------------------------------------------------------------------------------ is it right?
def sweep_rows(rec: Record) -> list:
    """v12's correctness rows over S × B·H: role "sweep" in records before the consolidation, "check" after."""
    rows = [r for r in rec.rows(kernel="v12_baseline") if r.get("role") in ("sweep", "check")]
    return sorted(rows, key=lambda r: (r["B"] * r["H"], r["S"]))


def sweep_ok(rec: Record) -> dict:
    rows = sweep_rows(rec)
    return dict(shapes=len(rows), passed=sum(bool(r["passed"]) for r in rows),
                deterministic=sum(bool(r["deterministic"]) for r in rows),
                unwritten=sum(int(r.get("unwritten") or 0) for r in rows),
                worst_err=max(r["max_abs_err"] for r in rows),
                worst_ratio=max(r["max_abs_err"] / r["tol"] for r in rows),
                seqs=sorted({r["S"] for r in rows}), bhs=sorted({r["B"] * r["H"] for r in rows}))


def correctness_text(rec: Record) -> str:
    ok = sweep_ok(rec)
    all_pass = ok["passed"] == ok["shapes"]
    text = (f"v12 passes **{ok['passed']} of {ok['shapes']}** shapes (S = {', '.join(map(str, ok['seqs']))} × "
            f"B·H = {', '.join(map(str, ok['bhs']))}) and is bit-identical across runs at **{ok['deterministic']} of "
            f"{ok['shapes']}**; its worst error is {ok['worst_err']:.1e}, {ok['worst_ratio']:.2f} of the allowed "
            f"tolerance")
    text += (", and no output element is left unwritten." if ok["unwritten"] == 0 else
             f"; {ok['unwritten']} output elements were left unwritten.")
    if not all_pass:
        text += " **Not every shape passes**: the table below says which."
    return text


def correctness_table(rec: Record, show: bool = True) -> str:
    rows = [{"B": r["B"], "H": r["H"], "S": r["S"], "max |err|": r["max_abs_err"], "tolerance": r["tol"],
             "passed": r["passed"], "bit-identical": r["deterministic"]} for r in sweep_rows(rec)]
    return book.table(rows, formats={"max |err|": "{:.1e}", "tolerance": "{:.1e}"}, show=show)


def correctness_dropdown(rec: Record, show: bool = True) -> str:
    ok = sweep_ok(rec)
    return book.dropdown(f"All {ok['shapes']} shapes of the correctness sweep",
                         correctness_table(rec, show=False), show=show)


def sanitizer_rows(rec: Record) -> list:
    """One row per (tool, kernel): the tool's own error count for that process and the verdict by the one rule
    (:func:`flashcore.tools.sanitize.verdicts`)."""
    verdict = {True: "clean", False: "problems", "known": "known finding", None: "not run"}
    summaries = _ext(rec, "sanitizer", [])
    owners = [s for s in summaries for _ in s["kernels"]]          # verdicts() walks summaries × kernels in order
    rows = []
    for r, s in zip(sanitize.verdicts(summaries), owners):
        errors = s.get("errors") if len(s["kernels"]) == 1 else r["problems"]
        rows.append({"tool": r["tool"], "kernel": label(r["kernel"]), "launches": r["launches"], "errors": errors,
                     "warnings": s.get("warnings") if len(s["kernels"]) == 1 else None,
                     "verdict": verdict[r["clean"]], "_id": r["kernel"], "_clean": r["clean"]})
    return rows


def sanitizer_table(rec: Record, show: bool = True) -> str:
    return book.table(sanitizer_rows(rec), columns=["tool", "kernel", "launches", "errors", "warnings", "verdict"],
                      formats={"errors": "{:,}", "warnings": "{:,}"}, show=show)


def sanitizer_logs(rec: Record, show: bool = True) -> str:
    """Every tool's log folded into one dropdown, one fold per run: the reports of the same invocation the table
    counts (``log_head``), or — in a record from before ``log_head`` was kept — the log's last lines, said so."""
    sums = _ext(rec, "sanitizer", [])
    inner = []
    for s in sums:
        kid = ", ".join(label(k) for k in s["kernels"])
        head = s.get("log_head")
        note = "" if head else ("<p><em>This record predates keeping the head of the log: these are its last "
                                "lines.</em></p>")
        inner.append(book.dropdown(f"{s['tool']} on {kid}: {s.get('summary') or 'no summary line'}", note,
                                   code=(head or s.get("log_tail") or "(empty log)"), show=False))
    if not inner:
        return ""
    return book.dropdown(f"compute-sanitizer's own logs ({len(inner)} runs)", "".join(inner), show=show)


def race_demo(rec: Record) -> dict:
    """The shortcut: its check at the mission shape and what racecheck said about it."""
    chk = _row(rec, "v12_no_4th_barrier")
    race = [s for s in _ext(rec, "sanitizer", []) if s["tool"] == "racecheck" and "v12_no_4th_barrier" in s["kernels"]]
    r = race[0] if race else {}
    return dict(max_abs_err=chk["max_abs_err"], tol=chk["tol"], passed=chk["passed"],
                deterministic=chk["deterministic"], racecheck_errors=r.get("errors"),
                racecheck_clean=r.get("clean"), racecheck_summary=r.get("summary", ""),
                first=next((p["first"] for p in r.get("per_launch", []) if p.get("first")), ""))


def race_text(rec: Record) -> str:
    r = race_demo(rec)
    v12_race = [x for x in sanitizer_rows(rec) if x["tool"] == "racecheck" and x["_id"] == "v12_baseline"]
    text = (f"The original's shortcut gave a max error of {SEED_SHORTCUT_L4_ERR} on the L4 (quoted). Here, at "
            f"{_shape(rec)}, its max error is **{r['max_abs_err']:.3f}** against a tolerance of {r['tol']:.1e}: "
            + ("it fails the check" if not r["passed"] else "it *passes* the check at this shape")
            + (", and its output differs from run to run" if r["deterministic"] is False else "") + ". ")
    if r["racecheck_errors"]:
        text += (f"racecheck on it counts **{r['racecheck_errors']:,} hazard errors** (`{r['racecheck_summary']}`); "
                 f"the first report: `{r['first']}`. ")
    elif r["racecheck_errors"] == 0:
        text += "racecheck reports no hazard on it at the sanitizer's shape. "
    else:
        text += "This record has no racecheck run of the shortcut. "
    if v12_race:
        text += ("On v12 itself racecheck is clean." if v12_race[0]["_clean"] is True else
                 f"On v12 itself racecheck's verdict is: {v12_race[0]['verdict']}.")
    return text


# ------------------------------------------------------------------------------------------------ how fast?
def drift(rec: Record) -> dict:
    """The peers measured a second time in the same run: {peer: median µs} (rows with role "drift"; the extra
    ``sdpa_after`` in records from before the consolidation)."""
    B, H, S, D = mission(rec)
    out = {r["kernel"]: r["median_us"] for r in rec.rows(B=B, H=H, S=S, role="drift")}
    return out or {k: v["median_us"] for k, v in (_ext(rec, "sdpa_after", {}) or {}).items()}


def timing_rows(rec: Record) -> list:
    """Every kernel of the run at the mission shape: check, µs (p10–p90), × cuDNN, × FlashAttention-2."""
    B, H, S, D = mission(rec)
    cud, fl = _t(rec, "sdpa_cudnn"), _t(rec, "sdpa_flash")
    rows = []
    for r in rec.rows(B=B, H=H, S=S, role="mission"):
        t = r["median_us"]
        if r["passed"] is None:
            check = "peer"
        else:
            check = ("pass" if r["passed"] else "FAIL") + (f", {r['max_abs_err']:.1e}" if r["max_abs_err"] is not None
                                                          else "")
        rows.append({"kernel": label(r["kernel"]), "check (max |err|)": check, "bit-identical": r["deterministic"],
                     "µs": t, "p10–p90": f"{us(r['p10_us'])}–{us(r['p90_us'])}" if t is not None else None,
                     "× cuDNN": t / cud if t else None, "× FA2": t / fl if t else None, "_id": r["kernel"]})
    return rows


def timing_table(rec: Record, show: bool = True) -> str:
    return book.table(timing_rows(rec), columns=["kernel", "check (max |err|)", "bit-identical", "µs", "p10–p90",
                                                 "× cuDNN", "× FA2"],
                      formats={"µs": us, "× cuDNN": ratio, "× FA2": ratio},
                      caption=f"{_shape(rec)}, CUDA-graph replay medians of one run. FA2 = FlashAttention-2 (SDPA); "
                              f"the peers are the yardstick, checked in chapter 0",
                      show=show)


def timing_text(rec: Record) -> str:
    """v12's time in words: against the peers, against the same kernel on the L4 (quoted), with the drift check."""
    h = headline(rec)
    sms_ratio = h["num_sms"] / SEED_L4_SMS
    vs_l4 = h["v12_us"] / SEED_MEASURED_L4_US
    text = (f"v12 takes **{us(h['v12_us'])} µs** at {_shape(rec)} on {_gpu(rec)}: **{ratio(h['x_cudnn'])}×** "
            f"cuDNN's {us(h['cudnn_us'])} µs in the same run. The same source on the L4 took "
            f"{SEED_MEASURED_L4_US:,.0f} µs (quoted); here it takes {vs_l4:.2f}× that, on a GPU with "
            f"{sms_ratio:.1f}× the SMs")
    if vs_l4 > 0.8:
        text += " — no faster. "
    elif vs_l4 > 1 / sms_ratio:
        text += f" — faster, but by far less than the {sms_ratio:.1f}× more SMs would allow. "
    else:
        text += ". "
    text += (f"A ratio that compares like with like: the same kernel body with one CTA per query tile "
             f"({label(h['grid_id'])}) is {ratio(h['grid_x_cudnn'])}× cuDNN, and the end of the ladder "
             f"({label(h['last_id'])}) {ratio(h['last_x_cudnn'])}×.")
    d = drift(rec)
    if "sdpa_cudnn" in d:
        first, again = h["cudnn_us"], d["sdpa_cudnn"]
        text += (f" cuDNN, timed again after our kernels, took {us(again)} µs (first {us(first)} µs): two "
                 f"measurements of the same thing {100 * abs(again - first) / first:.1f}% apart, so any ratio on "
                 f"this page is good to about that much.")
    return text


def schedule_rows(rec: Record) -> list:
    """v12 (persistent, one CTA per head busy) vs the per-tile grid vs cuDNN at S (mission) over B·H."""
    B, H, S, D = mission(rec)
    lad, _, _ = _ladders(rec)
    by_bh: dict = {}
    for r in rec.rows(S=S):
        if r.get("role") in ("mission", "schedule") and r["kernel"] in ("v12_baseline", lad[1], "sdpa_cudnn"):
            by_bh.setdefault(r["B"] * r["H"], {})[r["kernel"]] = r["median_us"]
    sms = rec.ext("num_sms")
    return [{"B·H": bh, label("v12_baseline") + " µs": t.get("v12_baseline"), label(lad[1]) + " µs": t.get(lad[1]),
             label("sdpa_cudnn") + " µs": t.get("sdpa_cudnn"), "CTAs with work (v12)": min(bh, sms), "SMs": sms,
             "_v12": t.get("v12_baseline"), "_grid": t.get(lad[1]), "_cudnn": t.get("sdpa_cudnn")}
            for bh, t in sorted(by_bh.items())]


def schedule_table(rec: Record, show: bool = True) -> str:
    rows = schedule_rows(rec)
    cols = [c for c in rows[0] if not c.startswith("_")]
    return book.table(rows, columns=cols, formats={c: us for c in cols if c.endswith("µs")},
                      caption=f"S = {mission(rec)[2]}, CUDA-graph replay medians", show=show)


def steps_per_cta(grid, B: int, H: int, S: int, tile=(BM, BN)) -> int:
    """Key-tile steps the busiest CTA runs in sequence, from the launched ``grid``: a grid of one CTA per (query
    tile, head) gives each CTA one query tile (its key tiles only); any other grid is v12's persistent schedule,
    where a CTA takes heads blockIdx.x, blockIdx.x + gridDim.x, … and walks every query tile of each."""
    n_qt, n_kt = -(-S // tile[0]), -(-S // tile[1])
    if list(grid[:2]) == [n_qt, B * H]:
        return n_kt
    return -(-(B * H) // grid[0]) * n_qt * n_kt


def schedule_text(rec: Record) -> str:
    B, H, S, D = mission(rec)
    rows = [r for r in schedule_rows(rec) if r["_v12"]]
    n_qt, n_kt = -(-S // _tile(rec)[0]), -(-S // _tile(rec)[1])
    steps = steps_per_cta(rec.ext("grids")["v12_baseline"]["grid"], B, H, S, _tile(rec))
    v12s = [r["_v12"] for r in rows]
    spread = max(v12s) / min(v12s)
    work = max(r["B·H"] for r in rows) // min(r["B·H"] for r in rows)
    text = (f"At B·H = {B * H} only {min(B * H, rec.ext('num_sms'))} CTAs have work, and each walks {n_qt} query "
            f"tiles × {n_kt} key tiles = **{steps} key-tile steps** in sequence. Across B·H = "
            f"{', '.join(str(r['B·H']) for r in rows)}, v12's time varies by a factor of only **{spread:.2f}** while "
            f"the work varies {work}×")
    if spread < 1.5 and max(r["B·H"] for r in rows) <= rec.ext("num_sms"):
        text += (": while B·H stays under the SM count, v12's time is the length of *one* CTA's walk, whatever "
                 "B·H is. The per-tile grid's time grows with the work instead, because its CTAs share the SMs.")
    else:
        text += "."
    return text


# ------------------------------------------------------------------------------------------------ the ladder
def _steps(rec: Record, order: str):
    lad, lad_b, _ = _ladders(rec)
    return (lad, CAUSES) if order == "a" else (lad_b, CAUSES_B)


def ladder(rec: Record, order: str = "a") -> list:
    """A cumulative ladder: each step's µs, the time it removed, and that delta's share of v12's time.

    ``order="a"``: the schedule first (grid → vec → softmax → prefetch); ``"b"``: inside the CTA first
    (softmax → vec → grid → prefetch). The deltas of either add up to v12's time minus the last step's."""
    steps, causes = _steps(rec, order)
    total = _t(rec, steps[0])
    rows, prev = [], total
    for kid in steps:
        t = _t(rec, kid)
        first = kid == steps[0]
        rows.append({"step": label(kid), "fixes": "v12 as designed" if first else causes[kid], "µs": t,
                     "removed µs": None if first else prev - t, "share of v12": None if first else (prev - t) / total,
                     "_id": kid})
        prev = t
    return rows


def ladder_table(rec: Record, order: str = "a", show: bool = True) -> str:
    title = {"a": "schedule first", "b": "inside the CTA first"}[order]
    return book.table(ladder(rec, order), columns=["step", "fixes", "µs", "removed µs", "share of v12"],
                      formats={"µs": us, "removed µs": us, "share of v12": "{:.1%}"},
                      caption=f"ladder, {title} ({_shape(rec)})", show=show)


def ladder_files_table(rec: Record, show: bool = True) -> str:
    """Each kernel of the ladders: its source (a download link, looked up by id) and the one idea it changes."""
    lad, lad_b, alone = _ladders(rec)
    rows = []
    for kid in dict.fromkeys(list(lad[1:]) + list(alone) + list(lad_b[1:])):
        try:
            spec = kernels.get(kid)
        except KeyError:                  # a kernel the registry no longer has: the record still names it
            rows.append({"kernel": label(kid)})
            continue
        rows.append({"kernel": label(kid), "file": spec.path.name if spec.path.is_file() else None,
                     "parent": label(spec.parent) if spec.parent else None, "the one idea": spec.idea})
    return book.table(rows, show=show)


def design_text(rec: Record) -> str:
    """What v12 is, with its launch numbers from the record (threads, tile) and its source linked by id."""
    threads = rec.ext("grids")["v12_baseline"]["block"][0]
    bm, bn = _tile(rec)
    return (f"The kernel is {book.kernel_source_link('v12_baseline')}, written from the design facts the original left "
            f"(`designs.md`). One {{term}}`CTA` of {threads} threads ({threads // 32} {{term}}`warps <warp>`) owns a "
            f"{bm}-row query tile and walks the keys {bn} at a time, with an {{term}}`online softmax` "
            f"{{cite}}`milakov2018online,dao2022flashattention` and 16×16×16 {{term}}`WMMA` tiles "
            f"{{cite}}`nvidia_cuda_guide`:")


def ladder_intro_text(rec: Record) -> str:
    """Why a ladder's shares depend on its order, with the multiplier from the record's shape and tile."""
    B, H, S, D = mission(rec)
    n_qt = -(-S // _tile(rec)[0])
    return ("The ladder is cumulative, so the time each step removes adds up to v12's time minus the last step's — "
            "nothing is double-counted and nothing is left out except the last kernel itself. But costs that "
            "**multiply** cannot be split into shares uniquely: v12's time is (steps the busiest CTA runs in "
            f"sequence) × (time per step), and a fix to the time per step saves {n_qt}× more (the {n_qt} query "
            "tiles each CTA walks) while the schedule is still serial. So we also climb the ladder in the other order "
            "— softmax, loads, then the grid — with the `v12_only_*` kernels, which apply the fixes to v12 with its "
            "persistent schedule kept.")


def sources_text(rec: Record) -> str:
    """Download links to every ladder kernel's source, looked up by id (files move; ids do not)."""
    lad, lad_b, alone = _ladders(rec)
    links = []
    for kid in dict.fromkeys(list(lad) + list(alone) + list(lad_b)):
        try:
            if kernels.get(kid).path.is_file():
                links.append(book.kernel_source_link(kid))
        except (KeyError, ValueError):        # a kernel the registry no longer has, or a file outside the tree
            continue
    return "Sources: " + " · ".join(links) if links else ""


def breakdown(rec: Record, order: str = "a") -> dict:
    """{cause: µs} — a ladder's deltas plus the residual (its last step's time); sums to v12's time exactly."""
    steps, causes = _steps(rec, order)
    rows = ladder(rec, order)
    out = {causes[r["_id"]]: r["removed µs"] for r in rows[1:]}
    out[RESIDUAL] = rows[-1]["µs"]
    return out


def explained(rec: Record, order: str = "a") -> dict:
    """How much of v12's time the named causes account for (Σ deltas / total), and the top three causes."""
    b = breakdown(rec, order)
    total = _t(rec, "v12_baseline")
    named = {k: v for k, v in b.items() if k != RESIDUAL}
    top = sorted(named.items(), key=lambda kv: -kv[1])[:3]
    return dict(total_us=total, explained_us=sum(named.values()), explained=sum(named.values()) / total,
                residual_us=b[RESIDUAL], top=[(k, v, v / total) for k, v in top])


def explained_text(rec: Record) -> str:
    e, eb, h = explained(rec, "a"), explained(rec, "b"), headline(rec)

    def top(x):
        return "; ".join(f"**{k}** {us(v)} µs ({100 * s:.1f}%)" for k, v, s in x["top"])

    return (f"The four named causes account for **{100 * e['explained']:.1f}%** of v12's {us(e['total_us'])} µs; the "
            f"remaining {us(e['residual_us'])} µs is the last kernel of the ladder — v12's design with every one of "
            f"them fixed, {ratio(h['last_x_cudnn'])}× cuDNN. Schedule first, the top three are: {top(e)}. Inside "
            f"the CTA first: {top(eb)}.")


def alone_rows(rec: Record) -> list:
    """One fix alone on v12 (persistent schedule kept) beside the same fix's share in the schedule-first ladder."""
    total = _t(rec, "v12_baseline")
    share = {r["_id"]: r["share of v12"] for r in ladder(rec, "a")}
    pairs = {"v12_only_vec": "v12_abl_2_vec", "v12_only_softmax": "v12_abl_3_softmax"}
    rows = []
    for kid in _ladders(rec)[2]:
        t = _t(rec, kid)
        rows.append({"variant": label(kid), "µs": t, "saves alone µs": total - t, "share alone": (total - t) / total,
                     "share in the ladder (schedule first)": share.get(pairs.get(kid))})
    return rows


def alone_table(rec: Record, show: bool = True) -> str:
    return book.table(alone_rows(rec), formats={"µs": us, "saves alone µs": us, "share alone": "{:.1%}",
                                                "share in the ladder (schedule first)": "{:.1%}"}, show=show)


def step_latency(rec: Record) -> list:
    """µs per key-tile step of the busiest CTA: the time the schedule multiplies."""
    B, H, S, D = mission(rec)
    lad, lad_b, alone = _ladders(rec)
    grids = rec.ext("grids")
    n_kt = -(-S // _tile(rec)[1])
    rows = []
    for kid in dict.fromkeys(list(lad) + list(lad_b) + list(alone)):
        n = steps_per_cta(grids[kid]["grid"], B, H, S, _tile(rec))
        t = _t(rec, kid)
        rows.append({"kernel": label(kid), "schedule": "persistent (per head)" if n > n_kt else "per query tile",
                     "steps per CTA": n, "µs": t, "µs per step": t / n, "_id": kid})
    return rows


def step_latency_table(rec: Record, show: bool = True) -> str:
    return book.table(step_latency(rec), columns=["kernel", "schedule", "steps per CTA", "µs", "µs per step"],
                      formats={"µs": us, "µs per step": us}, show=show)


def both_orders(rec: Record) -> list:
    """Each cause's µs and share of v12's time in both ladders."""
    a, b = breakdown(rec, "a"), breakdown(rec, "b")
    total = _t(rec, "v12_baseline")
    return [{"cause": k, "µs, schedule first": a[k], "share, schedule first": a[k] / total, "µs, CTA first": b[k],
             "share, CTA first": b[k] / total} for k in a]


def both_orders_table(rec: Record, show: bool = True) -> str:
    return book.table(both_orders(rec), formats={"µs, schedule first": us, "µs, CTA first": us,
                                                 "share, schedule first": "{:.1%}", "share, CTA first": "{:.1%}"},
                      show=show)


def estimate_text(rec: Record) -> str:
    """What the original estimate got wrong, measured: computed from both ladders."""
    est = SEED_ESTIMATE_L4_US
    a, b = breakdown(rec, "a"), breakdown(rec, "b")
    total = _t(rec, "v12_baseline")
    B, H, S, D = mission(rec)
    steps = steps_per_cta(rec.ext("grids")["v12_baseline"]["grid"], B, H, S, _tile(rec))
    named_a = {k: v for k, v in a.items() if k != RESIDUAL}
    biggest = max(named_a, key=named_a.get)
    items = []
    if biggest == GRID:
        items.append(f"**The biggest cost had no name.** The estimate's \"other overhead, ~{est['other (unexplained)']:.0f} "
                     f"µs\" is mostly the persistent schedule: {us(a[GRID])} µs if the schedule is fixed first, still "
                     f"{us(b[GRID])} µs if it is fixed last. The assessment listed \"persistent CTA overhead\" and "
                     f"\"poor occupancy\" among its reasons but gave them no share; v12 keeps "
                     f"{min(B * H, rec.ext('num_sms'))} CTAs busy on a {rec.ext('num_sms')}-SM GPU at the mission "
                     f"shape.")
    else:
        items.append(f"**The biggest measured cost is {biggest}**, {us(a[biggest])} µs schedule first; the estimate "
                     f"left ~{est['other (unexplained)']:.0f} µs unnamed.")
    soft_share = b[SOFTMAX] / total
    items.append(f"**The serial softmax was not on the list at all**, "
                 + (f"yet fixed first it removes {us(b[SOFTMAX])} µs, {100 * soft_share:.0f}% of v12"
                    if soft_share > 0.1 else f"and fixed first it removes only {us(b[SOFTMAX])} µs")
                 + f" ({us(a[SOFTMAX])} µs after the schedule fix): one warp, lane = row, a row stride of 64 floats "
                   "(every lane in the same shared-memory bank), while 15 warps wait at the barrier.")
    items.append(f"**The listed causes were per-tile guesses multiplied by {SEED_ESTIMATE_TILES} tiles**, where each "
                 f"busy CTA really runs {steps} key-tile steps in sequence. Scalar loads: estimated "
                 f"{est['scalar loads']:.0f} µs, measured {us(b[VEC])} µs (CTA first) or {us(a[VEC])} µs (schedule "
                 f"first): its size depends on the order. No overlap: estimated {est['no overlap']:.0f} µs, measured "
                 f"{us(a[PREFETCH])} µs. Barriers ({est['barriers (4 per tile)']:.0f} µs estimated) and WMMA "
                 f"({est['WMMA compute']:.0f} µs) cannot be removed one at a time without changing the algorithm; "
                 f"both sit inside the last kernel's {us(a[RESIDUAL])} µs.")
    return "What the estimate got wrong:\n\n" + "\n".join(f"* {t}" for t in items)


# ------------------------------------------------------------------------------------------------ ncu
def _ncu_rows(rec: Record) -> dict:
    """{ladder id: its tidy ncu row or None}; {} if the record has no report."""
    name = _ext(rec, "ncu_report", None)
    if not name or not (rec.dir / name).exists():
        return {}
    rows = profile.read_report(rec.file(name))
    return {kid: (profile.rows_for(rows, kid) or [None])[0] for kid in _ladders(rec)[0]}


NCU_METRICS = [("duration_us", "ncu µs (base clock)", us), ("grid_size", "CTAs launched", "{:.0f}"),
               ("sms_busy", "≈ SMs busy (cycles active / elapsed × SMs)", "{:.1f}"),
               ("achieved_occupancy_pct", "achieved occupancy %", "{:.1f}"),
               ("issue_active_pct", "issue active %", "{:.1f}"), ("tensor_pipe_pct", "tensor pipe %", "{:.2f}"),
               ("dram_throughput_pct", "DRAM throughput %", "{:.2f}"), ("l2_throughput_pct", "L2 throughput %",
                                                                         "{:.2f}"),
               ("smem_bank_conflicts", "smem bank conflicts (M)", lambda v: f"{v / 1e6:.2f}"),
               ("instructions", "instructions issued (M)", lambda v: f"{v / 1e6:.2f}"),
               ("registers_per_thread", "registers per thread", "{:.0f}")]


def _column(rec: Record, kid: str) -> str:
    lad = _ladders(rec)[0]
    if kid == lad[0]:
        return "v12"
    return "+ " + FIX_LABELS.get(CAUSES.get(kid, ""), label(kid))


def ncu_rows(rec: Record) -> dict:
    """{ladder id: {metric key: value}} with the derived ≈ SMs busy (mean SM cycles active / elapsed × SMs)."""
    out = {}
    for kid, row in _ncu_rows(rec).items():
        row = dict(row or {})
        act, ela, sms = row.get("sm_cycles_active_avg"), row.get("elapsed_cycles"), row.get("sm_count")
        row["sms_busy"] = act / ela * sms if act and ela and sms else None
        out[kid] = row
    return out


def ncu_table(rec: Record, show: bool = True) -> str:
    """Metrics as rows, the ladder's kernels as columns (so it fits the page)."""
    data = ncu_rows(rec)
    if not data:
        why = rec["extra"].get("ncu_error")
        note = f"*This record has no Nsight Compute report{': ' + why if why else ''}.*"
        if show:
            book.md(note)
        return note
    cols = {kid: _column(rec, kid) for kid in data}
    rows = []
    for key, name, f in NCU_METRICS:
        row = {"metric": name}
        for kid, col in cols.items():
            v = data[kid].get(key)
            row[col] = None if v is None else (f(v) if callable(f) else f.format(v))
        rows.append(row)
    return book.table(rows, caption=f"Nsight Compute at {_shape(rec)}: v12 and each step of the schedule-first "
                                    f"ladder (base clocks)", show=show)


def ncu_text(rec: Record) -> str:
    data = ncu_rows(rec)
    lad = _ladders(rec)[0]
    if not data or not data.get(lad[0]):
        return ""
    r0 = data[lad[0]]
    sms = rec.ext("num_sms")
    busy, tensor, dram = r0.get("sms_busy"), r0.get("tensor_pipe_pct"), r0.get("dram_throughput_pct")
    if None in (busy, tensor, dram):        # a report without one of the sections these come from
        text = "*This record's Nsight Compute report lacks SM activity, tensor-pipe or DRAM counters.*"
    else:
        text = (f"During v12, ncu sees on average **{busy:.1f} of {sms} SMs** busy (SM cycles active / elapsed), the "
                f"{{term}}`tensor pipe` {tensor:.2f}% busy and DRAM at {dram:.2f}% of peak: ")
        if tensor < 20 and dram < 20:
            text += ("it is neither compute- nor memory-bound, it is {term}`latency-bound`"
                     + (" on a few SMs." if busy < sms / 4 else "."))
        else:
            text += "the busier of the two is " + ("the tensor pipe." if tensor >= dram else "DRAM.")
    conflicts = [(kid, (data[kid] or {}).get("smem_bank_conflicts")) for kid in lad]
    if all(c is not None for _, c in conflicts):
        drops = [(conflicts[i][1] - conflicts[i + 1][1], conflicts[i + 1][0]) for i in range(len(lad) - 1)]
        drop, step = max(drops)
        text += (f" Shared-memory {{term}}`bank conflicts <bank conflict>`: {conflicts[0][1] / 1e6:.2f} M on v12, "
                 f"{conflicts[-1][1] / 1e6:.2f} M at the end of the ladder; the step that removes most of them is "
                 f"**{_column(rec, step)}** ({drop / 1e6:.2f} M fewer)"
                 + (": the one-warp softmax reads its rows with a stride that puts every lane in one bank."
                    if step == "v12_abl_3_softmax" else "."))
    return text


def stall_table_rows(rec: Record, top: int = 8) -> list:
    """Warp-state breakdown (warps stalled per issued instruction) of each ladder step, v12's top reasons."""
    lad = _ladders(rec)[0]
    rows = _ncu_rows(rec)
    stalls = {kid: profile.stall_breakdown(r) if r else {} for kid, r in rows.items()}
    if not stalls.get(lad[0]):
        return []
    out = []
    for reason in list(stalls[lad[0]])[:top]:
        row = {"stall reason": reason.replace("_", " ")}
        for kid in lad:
            row[_column(rec, kid)] = stalls.get(kid, {}).get(reason, 0.0)
        row["_reason"] = reason
        out.append(row)
    return out


def stall_table(rec: Record, show: bool = True) -> str:
    rows = stall_table_rows(rec)
    if not rows:
        return ""
    cols = [c for c in rows[0] if not c.startswith("_")]
    return book.table(rows, columns=cols, formats={c: "{:.2f}" for c in cols[1:]},
                      caption="warps stalled per issued instruction, by reason (ncu)", show=show)


def stall_text(rec: Record) -> str:
    rows = stall_table_rows(rec)
    if not rows:
        return ""
    lad = _ladders(rec)[0]
    cols = [_column(rec, k) for k in lad]
    top = rows[0]
    drops = [(top[cols[i]] - top[cols[i + 1]], i + 1) for i in range(len(cols) - 1)]
    drop, i = max(drops)
    text = (f"v12's top stall reason is **{top['stall reason']}**: {top[cols[0]]:.1f} warps stalled per issued "
            f"instruction, against {top[cols[-1]]:.1f} at the end of the ladder. The step that moves it most is "
            f"**{cols[i]}**: {top[cols[i - 1]]:.1f} before it, {top[cols[i]]:.1f} after")
    if lad[i] == "v12_abl_3_softmax" and top["_reason"] == "barrier":
        text += " — fifteen warps were waiting at the barrier for the one softmax warp."
    else:
        text += "."
    return text


def lessons_text(rec: Record) -> str:
    ok, r, h = sweep_ok(rec), race_demo(rec), headline(rec)
    san = [x for x in sanitizer_rows(rec) if x["_id"] == "v12_baseline"]
    clean = sum(1 for x in san if x["_clean"] is True)
    caught = [name for name, hit in (("the checker", r["passed"] is False),
                                     ("racecheck", bool(r["racecheck_errors"]))) if hit]
    stall_rows = stall_table_rows(rec)
    top_stall = stall_rows[0]["stall reason"] if stall_rows else None
    items = [f"**Correct first, and it stayed correct.** On a different GPU than the one it was written for, v12 "
             f"passed {ok['passed']} of {ok['shapes']} shapes, bit-identical at {ok['deterministic']}, clean under "
             f"{clean} of {len(san)} sanitizer tools. "
             + (f"The 4th barrier is real: without it {' and '.join(caught)} "
                f"{'both catch' if len(caught) == 2 else 'catches'} the race (error {r['max_abs_err']:.3f}"
                + (f", {r['racecheck_errors']:,} racecheck errors" if r["racecheck_errors"] else "") + ")."
                if caught else "Without the 4th barrier neither the checker nor racecheck caught a race in this run.")]
    if top_stall == "barrier":
        items.append("**Barriers are where the warps wait, not what they wait for.** ncu's top stall on v12 is the "
                     "barrier, but the ladder shows the cost is the work *between* barriers that one warp does alone, "
                     f"and a schedule that gives {h['busy_ctas']} CTAs all the work. The two multiply: the schedule "
                     "sets how many steps run in sequence, the softmax how long each is.")
    items.append("**An estimate with an \"other\" line two-thirds the size of the total is not a breakdown.** A ladder "
                 "is: every step a kernel that passed the same check, timed in the same run, the deltas adding up to "
                 f"the total by construction. What is left — {us(h['last_us'])} µs, {ratio(h['last_x_cudnn'])}× "
                 "cuDNN — is v12's design with those four costs removed: still four barriers per key tile and a WMMA "
                 "accumulator in shared memory (not taken apart here).")
    return ("## What this chapter teaches\n\n" + "\n".join(f"* {t}" for t in items)
            + "\n\nThe next chapters leave v12's design behind: v11 (the pipeline that deadlocked) and v8 (the fast "
              "branch).")


# ------------------------------------------------------------------------------------------------ charts
def plot_schedule(rec: Record):
    """v12, the per-tile grid and cuDNN over B·H at the mission S: v12 flat while B·H < SMs."""
    plt = plots.plt()
    rows = schedule_rows(rec)
    lad = _ladders(rec)[0]
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    bhs = [r["B·H"] for r in rows]
    for key, kid, color, marker in (("_v12", "v12_baseline", "#444444", "o"), ("_grid", lad[1], CAUSE_COLORS[GRID], "s"),
                                    ("_cudnn", "sdpa_cudnn", plots.COLORS["sdpa_cudnn"], "^")):
        pts = [(r["B·H"], r[key]) for r in rows if r[key]]
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=label(kid))
    ax.set_xticks(bhs)
    ax.set_xticklabels([str(b) for b in bhs])
    ax.minorticks_off()
    ax.set_xlabel("B·H (heads of work)")
    ax.set_ylabel("µs per call (log)")
    ax.set_title(f"v12's schedule: time over B·H at S = {mission(rec)[2]}", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    plots.save(fig, "01_v12_schedule", rec, alt="v12, the per-tile grid and cuDNN over B·H")
    return fig


def plot_ladder(rec: Record):
    """Both ladders, µs per step on a log axis, with cuDNN of the same run; one ladder per row."""
    plt = plots.plt()
    cud = _t(rec, "sdpa_cudnn")
    fig, axes = plt.subplots(2, 1, figsize=(7.2, 5.8), sharey=True)
    for ax, order, title in zip(axes, ("a", "b"), ("schedule first", "inside the CTA first")):
        rows = ladder(rec, order)
        steps, causes = _steps(rec, order)
        colors = ["#444444"] + [CAUSE_COLORS.get(causes[k], "#999999") for k in steps[1:]]
        vals = [r["µs"] for r in rows]
        ax.bar(range(len(steps)), vals, color=colors, width=0.6)
        ax.axhline(cud, color=plots.COLORS["sdpa_cudnn"], ls="--", lw=1, label=f"cuDNN, same run ({us(cud)} µs)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(["v12"] + ["+ " + FIX_LABELS[causes[k]] for k in steps[1:]], fontsize=8)
        for i, v in enumerate(vals):            # above the bar, or inside it where the cuDNN line would cross
            clash = v * 1.05 <= cud <= v * 1.6
            ax.text(i, v * (0.9 if clash else 1.08), us(v), ha="center", va="top" if clash else "bottom", fontsize=8,
                    color="white" if clash else "black")
        ax.set_title(f"ladder, {title}", fontsize=9)
        ax.set_ylabel("µs per call (log)")
    axes[0].set_ylim(min(cud, min(r["µs"] for r in ladder(rec, "a"))) / 2, _t(rec, "v12_baseline") * 3)
    axes[0].legend(fontsize=7.5, loc="upper right", frameon=False)
    fig.suptitle(f"Fixing v12 one cost at a time ({_shape(rec)})", fontsize=10)
    fig.tight_layout()
    plots.save(fig, "01_v12_ladder", rec, alt="both ablation ladders of v12, µs per step, with cuDNN")
    return fig


def plot_estimate_vs_measured(rec: Record):
    """The original's estimated split (L4, quoted) beside the two measured ones (this run), as shares of each
    total. A segment is labelled only where its label fits inside it; the legends name every colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Patch

    plt = plots.plt()
    gpu = _gpu(rec)
    est_colors = dict(zip(SEED_ESTIMATE_L4_US, ["#fdd0a2", "#fdae6b", "#fd8d3c", "#e6550d", "#dddddd"]))
    bars = [(f"measured, {gpu}\nschedule first", breakdown(rec, "a"), CAUSE_COLORS),
            (f"measured, {gpu}\nCTA first", breakdown(rec, "b"), CAUSE_COLORS),
            ("estimated, L4\n(assessment, quoted)", SEED_ESTIMATE_L4_US, est_colors)]
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    segments = []
    for y, (name, parts, colors) in enumerate(bars):
        total, left = sum(parts.values()), 0.0
        for cause, t in parts.items():
            ax.barh(y, t / total, left=left, color=colors.get(cause, "#999999"), edgecolor="white")
            segments.append((y, left, t / total, t))
            left += t / total
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the kernel's total time")
    # one legend under the axes: measured causes in the left column, the estimate's (quoted) in the right
    handles = ([Patch(color=c, label=n) for n, c in CAUSE_COLORS.items()]
               + [Patch(color=c, label=f"{n} (L4 estimate)") for n, c in est_colors.items()])
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.4, -0.16), frameon=False)
    ax.set_title("Where v12's time goes: the original estimate vs two measured ladders", fontsize=9)
    fig.tight_layout()
    renderer = FigureCanvasAgg(fig).get_renderer()     # the final layout: a label stays only where it fits
    for y, left, share, t in segments:
        text = ax.text(left + share / 2, y, f"{us(t)} µs", ha="center", va="center", fontsize=7.5)
        seg = ax.transData.transform([(left, y), (left + share, y)])
        if text.get_window_extent(renderer).width > (seg[1][0] - seg[0][0]) * 0.9:
            text.remove()                       # no room: the legend and the tables carry the number
    plots.save(fig, "01_v12_estimate_vs_measured", rec, alt="v12's time split: the L4 estimate (quoted) vs the two "
                                                             "measured ladders")
    return fig


def plot_stalls(rec: Record):
    """Warp states of v12 and of the end of the ladder (ncu), v12's top reasons."""
    import numpy as np

    plt = plots.plt()
    rows = stall_table_rows(rec)
    if not rows:
        return None
    lad = _ladders(rec)[0]
    first, last = _column(rec, lad[0]), _column(rec, lad[-1])
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r[first] for r in rows], height=0.4, color="#d62728", label=f"{label(lad[0])}")
    ax.barh(y + 0.2, [r[last] for r in rows], height=0.4, color="#ff9896", label=f"{label(lad[-1])} (end of ladder)")
    ax.set_yticks(y)
    ax.set_yticklabels([r["stall reason"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("warps stalled per issued instruction (ncu)")
    ax.set_title(f"Warp states: v12 vs the end of the ladder ({_shape(rec)})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    fig.tight_layout()
    plots.save(fig, "01_v12_stalls", rec, alt="warp stall reasons of v12 and the end of its ladder")
    return fig
