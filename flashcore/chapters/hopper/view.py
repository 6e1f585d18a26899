"""Chapter 5's page, drawn from the ``05_hopper`` record only (plus two computations that need no GPU: the model
checker on the pipeline protocol, and chapter 0's floors from chapter 0's record of the same GPU).

Every comparison goes through chapter 3's rule (:func:`flashcore.chapters.v8.view.compare_rows`): two timings tie
when their p10–p90 ranges overlap or their gap is inside the record's own repeat spread — here the largest
difference between the two timings of one kernel at one shape (its ``role="time"`` row and its crossover-grid row).
FlashAttention-4's figures are not in the record: they come from ``references/h200-anchors-2026-11-30.md``, a
separate measurement, and the page says so wherever it shows them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

from ... import book, dispatch, kernels, plots
from ...harness import bench
from ...labels import label
from ...paths import ROOT as REPO
from ...records import Record, RecordError
from ...tools import profile
from ..v8.view import NOT_WAITS, STALL_MEANING, compare_rows, fmt, pct, times, verdict_text
from . import FIGURES, LIBRARY, PREDICTED, RUNGS, V8_LIBRARY

PEERS = ("sdpa_cudnn", "sdpa_flash", "triton_attention")
ANCHORS = REPO / "references" / "h200-anchors-2026-11-30.md"
HELD = 0.10                     # a prediction within 10 % of the measurement "held"
PIPE_METRICS = (("tensor_pipe_pct", "tensor pipe"), ("xu_pipe_pct", "MUFU (xu) pipe"),
                ("issue_active_pct", "issue slots used"))


# ----------------------------------------------------------------------------------------------- lookups
def big(rec: Record) -> tuple:
    B, H, S, D = rec.ext("big")
    return int(B), int(H), int(S), int(D)


def mission(rec: Record) -> tuple:
    B, H, S, D = rec.ext("mission")
    return int(B), int(H), int(S), int(D)


def time_row(rec: Record, kid: str, shape: Optional[tuple] = None) -> Optional[dict]:
    """The kernel's checked-and-timed row at a time shape (default: the compute-bound shape)."""
    B, H, S = (shape or big(rec))[:3]
    rows = [r for r in rec.rows(kernel=kid, B=B, H=H, S=S, role="time") if r.get("S_kv", S) == S]
    return rows[0] if rows else None


def time_shapes(rec: Record) -> List[tuple]:
    seen = []
    for r in rec.get("results", []):
        if r.get("role") == "time" and (r["B"], r["H"], r["S"]) not in seen:
            seen.append((r["B"], r["H"], r["S"]))
    return seen


def grid_rows(rec: Record) -> List[dict]:
    return [r for r in rec.get("results", []) if r.get("stage") == "grid"]


def repeat_spread(rec: Record) -> Optional[dict]:
    """The largest relative difference between the two timings of one kernel at one shape in this record."""
    seen: Dict[tuple, List[float]] = {}
    for r in rec.get("results", []):
        if r.get("median_us") and (r.get("role") == "time" or r.get("stage") == "grid"):
            seen.setdefault((r["kernel"], r["B"], r["H"], r["S"], r.get("S_kv", r["S"])), []).append(
                float(r["median_us"]))
    best = None
    for (kid, B, H, S, _), xs in seen.items():
        if len(xs) >= 2:
            frac = (max(xs) - min(xs)) / min(xs)
            if best is None or frac > best["frac"]:
                best = dict(frac=frac, kernel=kid, shape=f"B{B} H{H} S{S}", low=min(xs), high=max(xs))
    return best


def versus(rec: Record, a: str, b: str, shape: Optional[tuple] = None) -> Optional[dict]:
    return compare_rows(time_row(rec, a, shape), time_row(rec, b, shape), repeat_spread(rec))


def ncu(rec: Record, kid: str) -> dict:
    return dict((rec.get("extra", {}).get("ncu") or {}).get(kid) or {})


def shape_text(shape) -> str:
    B, H, S = shape[:3]
    return f"B{B} H{H} S{S}"


# ----------------------------------------------------------------------------------------------- FA4 anchors
def anchors(path: Path = ANCHORS) -> Dict[tuple, dict]:
    """FA4's Hopper path (and the other columns) from the reference file, parsed — never typed: {(B, H, S): {column:
    value}} with µs for the small shapes and TFLOP/s (key ``unit``) for the large ones."""
    out: Dict[tuple, dict] = {}
    if not path.is_file():
        return out
    header = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0].startswith("shape"):
            header = cells
            continue
        if header and len(cells) == len(header) and re.fullmatch(r"\d+,\d+,\d+", cells[0]):
            row = {}
            for name, cell in zip(header[1:], cells[1:]):
                m = re.match(r"([\d.]+)", cell)
                if m:
                    row[name] = float(m.group(1))
                    row["unit"] = "TFLOP/s" if "TF" in cell else "µs"
            out[tuple(int(x) for x in cells[0].split(","))] = row
    return out


def fa4(shape: tuple) -> Optional[tuple]:
    """(value, unit) of FA4's Hopper path at (B, H, S) from the anchors, or None."""
    row = anchors().get(tuple(shape[:3]))
    if not row:
        return None
    col = next((k for k in row if k.startswith("FA4")), None)
    return (row[col], row["unit"]) if col else None


def fa4_tflops(shape: tuple) -> Optional[float]:
    v = fa4(shape)
    if not v:
        return None
    value, unit = v
    B, H, S = shape[:3]
    return value if unit == "TFLOP/s" else bench.tflops(B, H, S, 64, value)


# ----------------------------------------------------------------------------------------------- summary
def summary_md(rec: Record) -> str:
    b, m = big(rec), mission(rec)
    fin = time_row(rec, LIBRARY)
    lines = []
    if fin and fin.get("tflops"):
        parts = []
        for peer in ("sdpa_cudnn", "sdpa_flash", "triton_attention"):
            c = versus(rec, LIBRARY, peer)
            if c:
                parts.append(f"{label(peer)} {fmt(time_row(rec, peer)['tflops'])} ({verdict_text(c)})")
        lines.append(f"- **{shape_text(b)} D{b[3]}:** {label(LIBRARY)} reaches **{fmt(fin['tflops'])} TFLOP/s**; "
                     + "; ".join(parts) + ".")
    for shape in time_shapes(rec):
        if shape in (b[:3], m[:3]):
            continue
        r, c = time_row(rec, LIBRARY, shape), versus(rec, LIBRARY, "sdpa_cudnn", shape)
        if r and c:
            lines.append(f"- {shape_text(shape)}: {fmt(r['tflops'])} TFLOP/s against cuDNN's "
                         f"{fmt(time_row(rec, 'sdpa_cudnn', shape)['tflops'])} — {verdict_text(c)}.")
    lib_id = pick(*m[:3], m[2], int(rec["provenance"].get("num_sms") or 132))
    r, libr, cud = (time_row(rec, k, m) for k in (LIBRARY, lib_id, "sdpa_cudnn"))
    if r and libr and cud:
        lines.append(f"- **The mission shape {shape_text(m)}** is not this kernel's: {fmt(r['median_us'])} µs "
                     f"against cuDNN's {fmt(cud['median_us'])} ({_tiles_text(m)}). The library runs "
                     f"{label(lib_id)} there (its dispatch rule): {fmt(libr['median_us'])} µs, "
                     f"{times(libr['median_us'] / cud['median_us'])} cuDNN's time, short of the issue's 0.5×.")
    worst = worst_pick(rec)
    if worst:
        lines.append(f"- **Across {len(pick_rows(rec))} shapes** the library's pick is slower than cuDNN at "
                     f"{sum(1 for p in pick_rows(rec) if p['verdict'] == 'slower')}; the worst is "
                     f"{worst['shape']} at {times(worst['ratio'])} cuDNN's time ({worst['why']}).")
    spread = repeat_spread(rec)
    if spread:
        lines.append(f"- Tie rule: two measurements of {label(spread['kernel'])} at {spread['shape']} in this "
                     f"record differ by {pct(100 * spread['frac'])}; a gap inside that is a tie.")
    return "\n".join(lines)


def _tiles_text(shape: tuple) -> str:
    B, H, S = shape[:3]
    tiles = B * H * -(-S // 192)
    return f"{tiles} tiles of 192 rows for 132 SMs"


def show_summary(rec: Record) -> None:
    book.md("**In one run on " + str(rec["provenance"].get("gpu")) + "** (CUDA-graph medians; every kernel checked "
            "against fp64 first):\n\n" + summary_md(rec))


# ----------------------------------------------------------------------------------------------- floors
def _method_record(rec: Record) -> Optional[Record]:
    from ... import records

    try:
        return records.newest("00_method", device=rec.dir.parent.name, runs_dir=rec.dir.parent.parent)
    except (RecordError, Exception):
        return None


def floor_rows(rec: Record) -> List[dict]:
    m0 = _method_record(rec)
    if m0 is None:
        return []
    c = m0.ext("ceilings")
    out = []
    for shape in (big(rec), mission(rec)):
        B, H, S, D = shape
        f = bench.floors_us(B, H, S, D, gemm_tflops=c["gemm_fp16_tflops"], copy_tbps=c["copy_tbps"],
                            exp2_per_s=c["exp2_per_s"], launch_us=c["empty_graph"]["median_us"])
        r = time_row(rec, LIBRARY, shape)
        lib = time_row(rec, V8_LIBRARY, shape)
        best_floor = max(f.values())
        out.append({"shape": shape_text(shape), "tensor floor µs": f["tensor"], "exp2 floor µs": f["exp"],
                    "memory floor µs": f["memory"], "launch µs": f["launch"],
                    f"{label(LIBRARY)} µs": r["median_us"] if r else None,
                    "× largest floor": r["median_us"] / best_floor if r else None,
                    f"{label(V8_LIBRARY)} µs": lib["median_us"] if lib else None})
    return out


def show_floors(rec: Record) -> None:
    rows = floor_rows(rec)
    if not rows:
        book.md("*Chapter 0 has no record for this GPU, so its floors are not drawn here.*")
        return
    m0 = _method_record(rec)
    book.table(rows, caption=f"Floors from chapter 0's record {m0['run_id']} (GEMM rate, copy bandwidth, exp2 rate, "
                             "empty-graph launch) beside the measured times")
    r = rows[0]
    book.md(f"At {r['shape']} the tensor-core floor and the exp2 floor are {fmt(r['tensor floor µs'])} and "
            f"{fmt(r['exp2 floor µs'])} µs: the two units are loaded within "
            f"{pct(100 * abs(r['tensor floor µs'] - r['exp2 floor µs']) / max(r['tensor floor µs'], r['exp2 floor µs']))} "
            f"of each other. The final kernel takes {times(r['× largest floor'])} the larger floor; a kernel that "
            f"ran both units perfectly in parallel would take 1.00×, one that ran them one after the other about "
            f"{times((r['tensor floor µs'] + r['exp2 floor µs']) / max(r['tensor floor µs'], r['exp2 floor µs']))}.")


# ----------------------------------------------------------------------------------------------- protocol
def protocol_rows() -> List[dict]:
    """The model checker's verdicts (CPU, a fraction of a second): the kernels' own protocol — per-warp releases,
    with and without overlap — then the faulty variants, each a bug a reader could write."""
    from ... import modelcheck as mc

    models = {
        "the kernels' protocol (per-warp release)": mc.hopper_ws(2, 2, 5, consumer_warps=2, per_warp_release=True),
        "… with rung 04's overlap (two stages held)": mc.hopper_ws(2, 2, 5, consumer_warps=2, per_warp_release=True,
                                                                   overlap=True),
        "… one release too many expected (FAULT_SKIP_RELEASE)": mc.hopper_ws(2, 2, 3, consumer_warps=2,
                                                                             per_warp_release=True, empty_count=9),
        "… one release too few expected": mc.hopper_ws(2, 2, 3, consumer_warps=2, per_warp_release=True,
                                                       empty_count=7),
        "roles removed: every barrier counts the block (v11's bug)": mc.hopper_roleless(2, 2, 3),
        "producer starts on parity 0": mc.hopper_wrong_parity(2, 2, 3),
        "expect_tx counts only K, not K + V": mc.hopper_tx_mismatch(2, 2, 3),
        "one warp releases for its warpgroup, no barrier": mc.hopper_warp_release(2, 1, 3),
        "overlap with a one-stage ring": mc.hopper_ws(1, 2, 3, overlap=True),
    }
    out = []
    for name, model in models.items():
        r = mc.check(model)
        v = mc.first_violation(r)
        out.append({"protocol": name, "states": r.states,
                    "verdict": "proved: no deadlock, no overwrite" if v is None and not r.truncated else
                    (v["kind"] if v else "not proved (search truncated)"),
                    "first counterexample": (f"{v['message']} (after {v['steps']} steps)" if v else "—")})
    return out


def proof_grid_rows() -> List[dict]:
    """The kernels' protocol over ring depths, consumer counts and tile counts (every stage refilled)."""
    from ... import modelcheck as mc

    out = []
    for st, c, t, ov in ((2, 2, 5, False), (2, 2, 5, True), (2, 3, 3, True), (4, 2, 9, True)):
        r = mc.check(mc.hopper_ws(st, c, t, consumer_warps=2, per_warp_release=True, overlap=ov))
        out.append({"stages": st, "consumer warpgroups": c, "key tiles": t, "overlap": "yes" if ov else "no",
                    "states": r.states, "verdict": "proved" if not r.deadlock and r.safety is None and not
                    r.truncated else r.verdict})
    return out


def show_protocol() -> None:
    rows = protocol_rows()
    book.table(rows, caption="flashcore/modelcheck.py on the Hopper pipeline and its faulty variants")
    grid = proof_grid_rows()
    book.md(f"The same proof over {len(grid)} configurations of the kernels' protocol, each with every stage "
            f"refilled at least once (the 4-stage, 9-tile case wraps every parity back to its start): "
            + ", ".join(f"{g['stages']} stages × {g['consumer warpgroups']} consumers × {g['key tiles']} tiles"
                        f"{' with overlap' if g['overlap'] == 'yes' else ''}: {g['verdict']} ({g['states']:,} "
                        f"states)" for g in grid)
            + ". Three consumer warpgroups with four stages exceed the checker's two-million-state budget: that "
              "configuration is not proved, and the page does not say it is. `make test` runs these checks "
              "(tests/test_modelcheck.py).")


# ----------------------------------------------------------------------------------------------- ladder
def ladder_rows(rec: Record) -> List[dict]:
    b, m = big(rec), mission(rec)
    out = []
    for e in rec.ext("ladder"):
        kid, pred = e["id"], PREDICTED.get(e["id"], {})
        r, rm = time_row(rec, kid), time_row(rec, kid, m)
        c = versus(rec, kid, e["parent"]) if e.get("parent") in RUNGS else None
        out.append({"rung": label(kid), f"{shape_text(b)} TFLOP/s": r.get("tflops") if r else None,
                    "predicted TFLOP/s": pred.get("big_tflops"),
                    "vs parent": verdict_text(c) if c else "—",
                    f"{shape_text(m)} µs": rm.get("median_us") if rm else None,
                    "predicted µs": pred.get("mission_us")})
    return out


def show_ladder(rec: Record) -> None:
    book.table(ladder_rows(rec), caption="Each rung at the compute-bound and at the mission shape, against the "
                                         "prediction its header made before it ran")


def rung_md(rec: Record, kid: str) -> str:
    e = next((x for x in rec.ext("ladder") if x["id"] == kid), None)
    if e is None:
        return f"*{kid} is not in this record.*"
    pred = PREDICTED.get(kid, {})
    b = big(rec)
    r = time_row(rec, kid)
    parent = e.get("parent") if e.get("parent") in RUNGS else None
    out = []
    if r and r.get("tflops"):
        miss = r["tflops"] / pred["big_tflops"] if pred.get("big_tflops") else None
        held = miss is not None and abs(miss - 1) <= HELD
        out.append(f"**Predicted** {pred.get('big_tflops')} TFLOP/s at {shape_text(b)}; **measured** "
                   f"{fmt(r['tflops'])} ({times(miss)} the prediction: "
                   f"{'it held' if held else 'better' if miss > 1 else 'worse'}). ")
    if parent:
        c = versus(rec, kid, parent)
        out.append(f"Against {label(parent)}: **{verdict_text(c)}**" + (f" ({c['why']})" if c and c['why'] else "")
                   + ". ")
    ev = ncu(rec, kid)
    pv = ncu(rec, parent) if parent else ncu(rec, V8_LIBRARY)
    who = label(parent) if parent else f"the v8 library kernel ({label(V8_LIBRARY)})"
    if ev:
        parts = []
        for key, name in PIPE_METRICS:
            if ev.get(key) is not None:
                before = f" (was {fmt(pv[key])} %)" if pv.get(key) is not None else ""
                parts.append(f"{name} {fmt(ev[key])} %{before}")
        stalls = top_stalls(ev, 3)
        out.append(f"\n\n**Nsight Compute** ({shape_text(b)}, against {who}): " + "; ".join(parts) + ". "
                   + ("Top waits per issued instruction: "
                      + ", ".join(f"{s} {fmt(v)} ({STALL_MEANING.get(s, s.replace('_', ' '))})" for s, v in stalls)
                      + "." if stalls else ""))
        moving = pred.get("moving", ())
        if moving:
            moved = []
            for mname in moving:
                a, bb = pv.get(mname) if not mname.startswith("stall_") else pv.get(mname), ev.get(mname)
                if a is not None and bb is not None:
                    moved.append(f"{mname.replace('_', ' ')} {fmt(a)} → {fmt(bb)}")
            if moved:
                out.append(" The header said its idea should move " + ", ".join(moved) + ".")
    return "".join(out)


def top_stalls(row: dict, n: int = 3) -> List[tuple]:
    s = profile.stall_breakdown(row)
    return [(k, v) for k, v in s.items() if k not in NOT_WAITS][:n]


def show_rung(rec: Record, kid: str) -> None:
    book.md(rung_md(rec, kid))


def plot_ladder(rec: Record, name: str = "05_hopper_ladder"):
    """TFLOP/s per rung at the compute-bound shape; ◆ = prediction; lines = peers (FA4: separate measurement)."""
    plt = plots.plt()
    b = big(rec)
    ids = [e["id"] for e in rec.ext("ladder")]
    vals = [(time_row(rec, i) or {}).get("tflops") for i in ids]
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(ids) + 2.2))
    y = list(range(len(ids)))[::-1]
    ax.barh(y, [v or 0 for v in vals], height=0.65,
            color=[plots.COLORS["flashcore_hopper"] if i == LIBRARY else "#c98b8b" for i in ids])
    preds = [(yy, PREDICTED.get(i, {}).get("big_tflops")) for yy, i in zip(y, ids)]
    ax.plot([p for _, p in preds if p], [yy for yy, p in preds if p], "D", color="white", mec="black", ms=6.5,
            label="predicted (kernel header)", zorder=3)
    for peer in PEERS + (V8_LIBRARY,):
        r = time_row(rec, peer)
        if r and r.get("tflops"):
            ax.axvline(r["tflops"], ls="--" if peer != V8_LIBRARY else ":", lw=1.2,
                       color=plots.COLORS.get(peer, "#555555"), label=f"{label(peer)}: {fmt(r['tflops'])}")
    f4 = fa4_tflops(b)
    if f4:
        ax.axvline(f4, ls="-.", lw=1.2, color=plots.COLORS["fa4_hopper"],
                   label=f"FA4 Hopper path: {fmt(f4)} (separate measurement)")
    tr = ax.get_yaxis_transform()
    for yy, v in zip(y, vals):
        ax.text(1.02, yy, f"{fmt(v)} TF/s" if v else "—", transform=tr, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([label(i) for i in ids])
    ax.set_xlabel(f"TFLOP/s at {shape_text(b)} D{b[3]} (CUDA-graph median; higher is better)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.45, -0.16), ncol=2, fontsize=8, frameon=False)
    return plots.save(fig, name, rec, alt="TFLOP/s of each Hopper rung against the peers")


# ----------------------------------------------------------------------------------------------- knobs
def knob_rows(rec: Record) -> List[dict]:
    out = []
    for knob, defines in (rec.get("extra", {}).get("knobs") or {}).items():
        row = {"build": label(knob), "-D": " ".join(f"{k}={v}" for k, v in defines.items())}
        for shape in time_shapes(rec):
            c = versus(rec, knob, LIBRARY, shape)
            r = time_row(rec, knob, shape)
            row[shape_text(shape)] = (f"{fmt(r['median_us'])} µs, {verdict_text(c)}" if r and c else "—")
        out.append(row)
    base = {"build": label(LIBRARY) + " (default)", "-D": "—"}
    for shape in time_shapes(rec):
        r = time_row(rec, LIBRARY, shape)
        base[shape_text(shape)] = f"{fmt(r['median_us'])} µs" if r else "—"
    return [base] + out


def show_knobs(rec: Record) -> None:
    book.table(knob_rows(rec), caption="The knob builds against the default build (verdict said of the knob)")


# ----------------------------------------------------------------------------------------------- pipes, stalls
def plot_pipes(rec: Record, name: str = "05_hopper_pipes"):
    plt = plots.plt()
    ids = [e["id"] for e in rec.ext("ladder")] + [V8_LIBRARY]
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    width = 0.26
    for j, (key, nm) in enumerate(PIPE_METRICS):
        vals = [ncu(rec, i).get(key) for i in ids]
        xs = [i + (j - 1) * width for i in range(len(ids))]
        bars = ax.bar(xs, [v or 0 for v in vals], width, label=nm)
        for x, v in zip(xs, vals):
            if v is not None:
                ax.text(x, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels([label(i) for i in ids], rotation=20, ha="right")
    ax.set_ylabel("% of peak while the SM is active")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize=8, frameon=False)
    b = big(rec)
    ax.set_title(f"Nsight Compute at {shape_text(b)} D{b[3]} (clocks locked to base)", fontsize=9)
    return plots.save(fig, name, rec, alt="tensor pipe, MUFU and issue utilisation per rung")


def stall_rows(rec: Record) -> List[dict]:
    out = []
    for i in [e["id"] for e in rec.ext("ladder")] + [V8_LIBRARY]:
        ev = ncu(rec, i)
        if not ev:
            continue
        st = top_stalls(ev, 4)
        out.append({"kernel": label(i), "ncu µs": ev.get("duration_us"), "registers": ev.get("registers_per_thread"),
                    "grid": ev.get("grid_size"), "top waits (warps per issued instruction)":
                    ", ".join(f"{k} {fmt(v)}" for k, v in st)})
    return out


def show_stalls(rec: Record) -> None:
    book.table(stall_rows(rec), caption="Where the warps wait, per rung (Nsight Compute WarpStateStats)")


# ----------------------------------------------------------------------------------------------- watchdog
def watchdog_md(rec: Record) -> str:
    wd = rec.get("extra", {}).get("watchdog") or []
    fault = rec.get("extra", {}).get("fault") or {}
    ok = [w for w in wd if w.get("finished")]
    out = [f"**{len(ok)} of {len(wd)} WATCHDOG launches finished with no record** "
           f"({', '.join(sorted({label(w['kernel']) for w in wd}))}, at "
           f"{', '.join(sorted({'B{} H{} S{} S_kv{}'.format(*w['shape']) for w in wd}))})."]
    if fault:
        d = fault.get("diagnosis") or {}
        first = d.get("first") or {}
        seen = first.get("arrivals_seen")
        arrivals = ("" if seen is None or seen < 0 else f", {seen} arrivals seen of {first.get('needed_arrivals')}")
        out.append(
            f"\n\n**The fault build** (`{', '.join(f'-D{k}' for k in fault.get('defines', {}))}`, "
            f"B{fault['shape'][0]} H{fault['shape'][1]} S{fault['shape'][2]} S_kv{fault['shape'][3]}): "
            + ("it finished — the fault did not show (the page flags this: the demo failed)." if fault.get("finished")
               else f"it returned after {fmt(1e3 * fault['seconds'])} ms instead of hanging; {d.get('warps')} warps "
                    f"in {len(d.get('ctas', []))} CTA(s) wrote a record. The first to give up: CTA {first.get('cta')}, "
                    f"warp {first.get('warp')}, role **{first.get('role')}**, waiting on **{first.get('barrier')}** "
                    f"(stage {first.get('stage')}, phase {first.get('phase')}, key tile {first.get('key_tile')})"
                    f"{arrivals} after {first.get('cycles_waited', 0):,} cycles — exactly the missing release. "
                    f"The others gave up because it did (reason 2): "
                    + ", ".join(f"{s['warps']} at {s['site'].split(' (')[0]} stage {s['stage']}"
                                for s in d.get("sites", [])) + "."))
    return "".join(out)


def show_watchdog(rec: Record) -> None:
    book.md(watchdog_md(rec))
    fault = rec.get("extra", {}).get("fault") or {}
    if fault.get("rows"):
        rows = [{k: r.get(k) for k in ("cta", "warp", "role", "site", "stage", "parity", "key_tile", "reason")}
                for r in fault["rows"]]
        book.dropdown(f"The fault build's first {len(rows)} records", book.table(rows, show=False))


# ----------------------------------------------------------------------------------------------- machine code
def ptxas_rows(rec: Record) -> List[dict]:
    return [{"build": label(r["build"]) if r["build"] in RUNGS else r["build"], "arch": r.get("arch"),
             "registers": r.get("registers"), "spill stores": r.get("spill_stores"),
             "spill loads": r.get("spill_loads"), "dynamic smem B": r.get("smem_dynamic"),
             "wgmma warnings": ", ".join(r.get("wgmma_warnings") or []) or "none", "error": r.get("error", "")}
            for r in rec.get("extra", {}).get("ptxas") or []]


def sass_rows(rec: Record) -> List[dict]:
    ev = rec.get("extra", {}).get("sass") or {}
    keys = ("HGMMA", "UTMALDG", "LDGSTS", "SYNCS", "USETMAXREG", "MUFU.EX2")   # HMMA and BAR: see chapter 3
    return [dict({"kernel": label(k)}, **{x: e.get(x) for x in keys},
                 **{"local LDL+STL": (e.get("LDL", 0) + e.get("STL", 0)) if "LDL" in e else None})
            for k, e in ev.items() if "error" not in e]


def show_machine_code(rec: Record) -> None:
    rows = ptxas_rows(rec)
    spills = sum((r["spill stores"] or 0) + (r["spill loads"] or 0) for r in rows)
    warns = [r for r in rows if r["wgmma warnings"] != "none"]
    book.md(f"**{len(rows)} builds, {spills} spilled bytes, {len(warns)} with a wgmma-serialisation warning.** "
            "The 128-register builds are the `__launch_bounds__(512, 1)` cap of the entry; the consumer branch runs "
            "after `setmaxnreg.inc` to 160 (240 with two consumers), the producer after `setmaxnreg.dec` to 24.")
    for r in rows:
        r.pop("error", None) if not r.get("error") else None
    book.table(rows, caption="ptxas -v (nvcc, sm_90a) for every rung, WATCHDOG, fault and knob build")
    book.table(sass_rows(rec), caption="Static SASS instruction counts (cuobjdump -sass)")


# ----------------------------------------------------------------------------------------------- checks
def check_summary(rec: Record) -> dict:
    rows = [r for r in rec.get("results", []) if r.get("passed") is not None]
    return dict(total=len(rows), passed=sum(1 for r in rows if r["passed"]),
                kernels=sorted({r["kernel"] for r in rows}),
                worst=max((r.get("max_abs_err") or 0 for r in rows), default=None))


def show_checks(rec: Record) -> None:
    s = check_summary(rec)
    verdicts = rec.get("extra", {}).get("sanitizer_verdicts") or []
    clean = [v for v in verdicts if v.get("clean") is True]
    book.md(f"**{s['passed']} of {s['total']} checks passed** ({len(s['kernels'])} kernels, largest |error| "
            f"{fmt(s['worst'])}). **compute-sanitizer: {len(clean)} of {len(verdicts)} (tool, kernel) runs clean** — "
            + ("every tool on the final kernel, memcheck and racecheck on the other rungs." if len(clean) == len(verdicts)
               else ", ".join(sorted({f"{v['tool']} on {label(v['kernel'])}" for v in verdicts
                                      if v.get('clean') is not True})) + " not clean."))
    rows = [{"kernel": label(r["kernel"]), "shape": f"B{r['B']} H{r['H']} S{r['S']} S_kv{r.get('S_kv', r['S'])}",
             "max |err|": r.get("max_abs_err"), "tolerance": r.get("tolerance"), "passed": r.get("passed"),
             "deterministic": r.get("deterministic")}
            for r in rec.get("results", []) if r.get("passed") is not None]
    book.dropdown(f"All {len(rows)} checks", book.table(rows, show=False))
    srows = [{"tool": v["tool"], "kernel": label(v["kernel"]), "clean": v.get("clean"),
              "launches": v.get("launches"), "problems": len(v.get("problems") or [])} for v in verdicts]
    book.table(srows, caption="compute-sanitizer, one process per tool and kernel, at "
                              + str((rec.get("params") or {}).get("sanitize_shapes", "small tail shapes")))


# ----------------------------------------------------------------------------------------------- the grid
def pick(B: int, H: int, S_q: int, S_kv: int, sms: int = 132) -> str:
    """What the library runs at a shape (fp16, D 64, not causal, sm_90): the dispatch rule itself."""
    return dispatch.choose(B, H, S_q, S_kv, dispatch.Device(sm=90, num_sms=sms)).kernel


def pick_rows(rec: Record) -> List[dict]:
    """Per grid shape: the library's pick (by the committed rule), its time and cuDNN's, and the verdict."""
    by: Dict[tuple, Dict[str, dict]] = {}
    for r in grid_rows(rec):
        by.setdefault((r["B"], r["H"], r["S"], r.get("S_kv", r["S"])), {})[r["kernel"]] = r
    spread = repeat_spread(rec)
    sms = int(rec["provenance"].get("num_sms") or 132)
    out = []
    for (B, H, S, S_kv), ks in by.items():
        kid = pick(B, H, S, S_kv, sms)
        mine, cud = ks.get(kid), ks.get("sdpa_cudnn")
        if not mine or not cud or not mine.get("median_us"):
            continue
        c = compare_rows(mine, cud, spread)
        best = min((k for k in (V8_LIBRARY, "hopper_02_tma", LIBRARY) if ks.get(k, {}).get("median_us")),
                   key=lambda k: ks[k]["median_us"])
        out.append(dict(shape=f"B{B} H{H} S{S}" + (f"/{S_kv}" if S_kv != S else ""), B=B, H=H, S=S, S_kv=S_kv,
                        flops=bench.attention_flops(B, H, S, 64, S_kv), pick=kid, us=mine["median_us"],
                        cudnn_us=cud["median_us"], ratio=mine["median_us"] / cud["median_us"],
                        verdict=("tie" if c["verdict"] == "tie" else "faster" if c["verdict"] == "faster"
                                 else "slower"), fastest_of_ours=best,
                        why=("decode: one query row per 64-row tile" if S == 1 else
                             "few query rows, long keys" if B * H * S <= 4096 else "")))
    return sorted(out, key=lambda r: r["flops"])


def worst_pick(rec: Record) -> Optional[dict]:
    rows = pick_rows(rec)
    return max(rows, key=lambda r: r["ratio"]) if rows else None


def plot_grid(rec: Record, name: str = "05_hopper_grid"):
    plt = plots.plt()
    rows = pick_rows(rec)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    markers = {V8_LIBRARY: "o", "hopper_02_tma": "s", LIBRARY: "D"}
    colors = {"faster": "#2ca02c", "tie": "#7f7f7f", "slower": "#d62728"}
    for kid, mk in markers.items():
        pts = [r for r in rows if r["pick"] == kid]
        for v in ("faster", "tie", "slower"):
            sub = [r for r in pts if r["verdict"] == v]
            if sub:
                ax.scatter([r["flops"] for r in sub], [r["ratio"] for r in sub], marker=mk, s=42, color=colors[v],
                           edgecolor="black", lw=0.5, zorder=3)
    ax.axhline(1.0, color=plots.COLORS["sdpa_cudnn"], lw=1.2, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("matrix FLOPs of the problem, 4·B·H·S_q·S_kv·D (log)")
    ax.set_ylabel("library time ÷ cuDNN time (log; < 1: faster)")
    w = worst_pick(rec)
    if w:
        ax.annotate(f"worst: {w['shape']}\n{times(w['ratio'])} ({label(w['pick'])})", (w["flops"], w["ratio"]),
                    xytext=(12, -6), textcoords="offset points", fontsize=8, va="top")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker=mk, ls="", color="#bbbbbb", mec="black", label=f"runs {label(k)}")
               for k, mk in markers.items()]
    handles += [Line2D([], [], marker="o", ls="", color=c, label=f"{v} than cuDNN" if v != "tie" else "tie with cuDNN")
                for v, c in colors.items()]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    return plots.save(fig, name, rec, alt="library time over cuDNN time at every grid shape")


def show_grid(rec: Record) -> None:
    rows = pick_rows(rec)
    slower = [r for r in rows if r["verdict"] == "slower"]
    w = worst_pick(rec)
    book.md(f"**{len(rows)} shapes: the library is faster than cuDNN at "
            f"{sum(1 for r in rows if r['verdict'] == 'faster')}, ties at {sum(1 for r in rows if r['verdict'] == 'tie')}"
            f" and is slower at {len(slower)}**" + (f" — the worst {w['shape']}, {times(w['ratio'])} cuDNN's time" if w
                                                   else "") + ". "
            + ("Where it loses: " + "; ".join(f"{r['shape']} ({label(r['pick'])}, {times(r['ratio'])}"
                                              + (f": {r['why']}" if r['why'] else "") + ")" for r in slower) + ". "
               if slower else "")
            + "The issue's goal — no slower than cuDNN at every shape — is not met at these shapes. "
            + f"The rule ({label(V8_LIBRARY)} for few query rows against long keys; {label(LIBRARY)} for large, "
              f"well-filled problems; {label('hopper_02_tma')} between) picks, at every shape, the fastest of our "
              f"three kernels or one tied with it: "
            + f"{sum(1 for r in rows if r['pick'] == r['fastest_of_ours'])} of {len(rows)} picks are the fastest "
              "outright.")
    table = [{"shape": r["shape"], "library runs": label(r["pick"]), "µs": r["us"], "cuDNN µs": r["cudnn_us"],
              "÷ cuDNN": r["ratio"], "verdict": r["verdict"], "fastest of ours": label(r["fastest_of_ours"])}
             for r in rows]
    book.table(table, caption="The crossover grid (CUDA-graph medians, one run); the library's pick by its rule")


# ----------------------------------------------------------------------------------------------- peers
def peer_rows(rec: Record) -> List[dict]:
    out = []
    for shape in time_shapes(rec):
        row = {"shape": shape_text(shape)}
        for kid in (LIBRARY, V8_LIBRARY) + PEERS:
            r = time_row(rec, kid, shape)
            row[label(kid)] = r.get("tflops") if r else None
        f4 = fa4_tflops(shape)
        row["FA4 Hopper path (separate measurement)"] = f4
        out.append(row)
    return out


def show_peers(rec: Record) -> None:
    book.table(peer_rows(rec), caption="TFLOP/s in this run; FA4's column is from references/h200-anchors-2026-11-30.md"
                                       " (another process, 2026-11-30), not from this record")
    book.md("FlashAttention-4 (`flash-attn-4`) was not installed on the GPU host for this run: its wheels (about "
            "100 MB) do not fit the 64 MiB the repository may carry to the GPU host beside the others. Its column is "
            "the reference measurement the team made on the same H200 model a day earlier, copied into the "
            "repository with its provenance; it is not comparable run-to-run with the other columns.")


# ----------------------------------------------------------------------------------------------- conclusion
def conclusion_md(rec: Record) -> str:
    b = big(rec)
    fin = time_row(rec, LIBRARY)
    cud = versus(rec, LIBRARY, "sdpa_cudnn")
    tri = versus(rec, LIBRARY, "triton_attention")
    f4 = fa4_tflops(b)
    lines = [f"- **The goal at {shape_text(b)}** (≥ 1.0× cuDNN's TFLOP/s): {label(LIBRARY)} "
             f"{fmt(fin['tflops'])} against cuDNN's {fmt(time_row(rec, 'sdpa_cudnn')['tflops'])} — "
             f"**{verdict_text(cud)}** by the tie rule; against the Triton kernel {verdict_text(tri)}."
             + (f" FA4's Hopper path measured {fmt(f4)} TFLOP/s separately: the moonshot is "
                f"{'reached' if fin['tflops'] >= f4 else 'not reached'} on these numbers, but they are not from one "
                f"run." if f4 else "")]
    for shape in time_shapes(rec):
        if shape[2] >= 2048 and shape != b[:3]:
            c = versus(rec, LIBRARY, "sdpa_cudnn", shape)
            lines.append(f"- {shape_text(shape)}: {verdict_text(c)} against cuDNN.")
    m = mission(rec)
    lib_id = pick(*m[:3], m[2], int(rec["provenance"].get("num_sms") or 132))
    libr, cud_m = time_row(rec, lib_id, m), time_row(rec, "sdpa_cudnn", m)
    if libr and cud_m:
        lines.append(f"- **The mission shape:** the library runs {label(lib_id)}, "
                     f"{times(libr['median_us'] / cud_m['median_us'])} cuDNN's time — the issue's ≤ 0.5× is **not "
                     f"met**. The Hopper family's small-shape mode (keys split over a cluster, partials combined in "
                     f"distributed shared memory: the ladder's rung 6) is not written.")
    w = worst_pick(rec)
    if w:
        lines.append(f"- **Across shapes:** the worst is {w['shape']} at {times(w['ratio'])} cuDNN's time; decode "
                     f"shapes (S_q = 1) are where every kernel of this book pays for 64- or 192-row query tiles.")
    ev = ncu(rec, LIBRARY)
    if ev:
        lines.append(f"- **What holds it back:** at {shape_text(b)} the tensor pipe is busy {fmt(ev.get('tensor_pipe_pct'))} % "
                     f"and MUFU {fmt(ev.get('xu_pipe_pct'))} % of the active cycles, with "
                     + ", ".join(f"{k} {fmt(v)}" for k, v in top_stalls(ev, 3))
                     + " the top waits: the two units still take turns more than they overlap.")
    return "\n".join(lines)


def show_conclusion(rec: Record) -> None:
    book.md(conclusion_md(rec))


def downloads(rec: Record) -> None:
    book.downloads(rec)


__all__ = ["show_summary", "show_floors", "show_protocol", "plot_ladder", "show_ladder", "show_rung", "show_knobs",
           "plot_pipes", "show_stalls", "show_watchdog", "show_machine_code", "show_checks", "plot_grid", "show_grid",
           "show_peers", "show_conclusion", "downloads", "pick_rows", "worst_pick", "anchors", "summary_md",
           "FIGURES"]
