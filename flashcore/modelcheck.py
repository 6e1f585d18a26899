"""An explicit-state model checker for a kernel's synchronization: deadlock found as a shortest trace, or proved absent;
for Hopper's TMA pipelines also the safety property that no stage is overwritten while a consumer still reads it.

The model (small on purpose, exact where it matters):

* **Processes** are warps, or groups of warps that do the same thing (a *role*); a process carries its thread count,
  because barriers count threads: one step of a process is all of its threads doing that operation.
* **mbarriers** have an expected arrival count, a pending count and a phase number. An arrival adds the process's
  thread count; when the count reaches the expected number the phase completes (arrivals beyond it carry into the
  next phase, as single-thread arrivals on hardware would). ``wait_parity(p)`` may proceed iff the current phase's
  parity differs from ``p`` (PTX ``mbarrier.test_wait.parity``: "the phase with parity p has completed").
* **The pipeline** is libcu++'s ``cuda::pipeline<thread_scope_block>`` (``cuda/pipeline``), op by op: each stage has a
  "produced" and a "consumed" barrier; each thread keeps ``head``, ``tail`` and two parities (consumed starts 1,
  produced 0). ``producer_acquire`` = wait_parity(consumed[head], cpar); ``producer_commit`` = arrive(produced[head]),
  head++ (wrapping flips cpar); ``consumer_wait`` = wait_parity(produced[tail], ppar); ``consumer_release`` =
  arrive(consumed[tail]), tail++ (wrapping flips ppar). The expected counts come from how the pipeline was made:
  role-less ``make_pipeline(group, &state)`` gives both barriers group.size(); with a producer count or a role, the
  produced barrier expects the producers and the consumed barrier the rest.
* **Block barriers** (``__syncthreads``, or a named ``bar.sync`` over some warps) count every thread they name:
  arrive, then wait for the phase to move.
* A ``work`` step does nothing to synchronization (it names the compute in traces).

**Hopper: mbarriers with transaction bytes, TMA, and who reads what.** The same barriers also carry a *transaction
count* (PTX ``tx-count``), and a phase completes only when both its arrivals are all in *and* its transaction count is
back at zero. The programs of these models are unrolled (each op names its barrier, parity and byte count):

* ``("mbar_arrive_tx", bar, count, bytes)`` is ``mbarrier.arrive.expect_tx``: it adds ``bytes`` to the phase's
  transaction count, then arrives ``count`` times (PTX does the expect-tx before the arrive-on).
  ``("mbar_expect_tx", bar, bytes)`` adds bytes without arriving. ``("mbar_arrive", bar, count, releases)`` arrives
  ``count`` times (an elected thread arrives once, a whole warp 32 times).
* ``("tma_load", bar, buffer, bytes, label)`` is ``cp.async.bulk.tensor…mbarrier::complete_tx::bytes``: the issuing
  process moves on at once and the copy is *in flight*. The **TMA engine** is a process of its own with no program:
  each of its steps lands one in-flight copy (any of them, in any order), which is ``complete_tx(bytes)`` on the
  copy's barrier: the count goes down (below zero if the bytes land before the ``expect_tx``, as PTX allows) and the
  phase completes if that was all it waited for. So every interleaving of copy completion with the other steps is
  explored.
* ``("mbar_wait", bar, parity, holds)`` is ``mbarrier.try_wait.parity`` in a loop: it proceeds iff the phase with
  parity ``parity`` has completed (the current phase's parity differs). ``holds`` names the (buffer, data) pairs the
  process *reads* from then on (``("K[0]", "K2")``: key tile 2 in stage 0's K buffer; a copy's ``label`` names the
  data it writes); an ``mbar_arrive``'s ``releases`` (or a ``work`` step's third element: the last wgmma that read
  them has retired in this warp) names the buffers whose read ends there.
* **Safety**, checked on every transition of every reachable state (so no reachable state has a copy in flight into
  a buffer that a process reads): a TMA write into a buffer starts only when no process still needs the data there —
  none still reads it (an *overwrite*: the write into stage s starts while a consumer has not released s) and none
  has yet to read it (*overwrite before read*); a read finds its data landed — not in flight or not yet issued
  (*read before landed*: its phase completed early, e.g. the expect_tx bytes were fewer than the copies deliver) and
  not already replaced by later data (*stale read*: the wait passed a phase too late). A phase that completes with a
  copy for it still in flight is also reported as a *transaction-count mismatch*; expecting more bytes than the
  copies deliver leaves the phase incomplete forever, which shows as a deadlock whose stuck barrier has all its
  arrivals and pending transaction bytes.

:func:`check` runs a breadth-first search over all interleavings and returns a :class:`Result`: the shortest trace
to a state where some process has not finished and no process can move (a deadlock), or a proof — every reachable
state explored, none stuck; for models with buffers it searches to the end and also gives the shortest trace to
each kind of unsafe step (a deadlock cannot hide a deeper overwrite). Builders for
the chapter's models are at the bottom (``textbook``, ``missing_arrival``, ``branch_barrier``, ``v11``; for chapter 5
``hopper_ws`` and its faulty variants ``hopper_roleless``, ``hopper_wrong_parity``, ``hopper_short_release``,
``hopper_tx_mismatch``, ``hopper_warp_release``), with :func:`run_all` (chapter 2) and :func:`run_hopper` /
:func:`sweep_hopper` (chapter 5) to check them for a run record.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# ----------------------------------------------------------------------------------------------- the model
Op = Tuple  # ("acquire",) ("commit",) ("wait",) ("release",) ("sync", bar) ("arrive", bar) ("waitbar", bar, parity)
            # ("work", label[, releases]); Hopper: ("mbar_wait", bar, parity, ((buffer, data), ...))
            # ("mbar_arrive", bar, count, (buffer, ...)) ("mbar_arrive_tx", bar, count, bytes)
            # ("mbar_expect_tx", bar, bytes) ("tma_load", bar, buffer, bytes, data)


@dataclass
class Process:
    name: str
    threads: int
    program: List[Op]
    role: str = ""
    engine: bool = False        # the TMA copy engine: no program; each step lands one in-flight copy


@dataclass
class Model:
    name: str
    processes: List[Process]
    barriers: Dict[str, int]                 # name → expected arrivals per phase
    stages: int = 0                          # pipeline stages (0: no pipeline)
    block_threads: int = 0
    note: str = ""
    buffers: List[str] = field(default_factory=list)    # shared-memory buffers TMA writes and processes read
    protocol: dict = field(default_factory=dict)        # the counts, parities and arrivals, for the kernel author

    @property
    def has_tma(self) -> bool:
        return any(p.engine for p in self.processes)


# state: (procs, bars, flight, contents)
# process state: (pc, head, tail, cpar, ppar, token)   token = phase a sync arrival is waiting to see pass (-1: none)
# barrier state: (pending, phase, mask, tx)   mask = processes that arrived in the current phase (a second arrival by
# the same process within one phase is an over-arrival: the phase completes before everyone it waits for has arrived);
# tx = the phase's transaction count in bytes (expect_tx adds, complete_tx subtracts; 0 in pipeline models)
# flight: the copies issued and not landed, sorted: (barrier index, buffer index, bytes, data label)
# contents: per buffer, the label of the data last written into it ("" before the first copy)

def _bar_index(model: Model) -> Dict[str, int]:
    return {n: i for i, n in enumerate(model.barriers)}


def _initial(model: Model):
    procs = tuple((0, 0, 0, 1, 0, -1) for _ in model.processes)
    bars = tuple((0, 0, 0, 0) for _ in model.barriers)
    return procs, bars, (), tuple("" for _ in model.buffers)


_MBAR_OPS = ("mbar_wait", "mbar_arrive", "mbar_arrive_tx", "mbar_expect_tx", "tma_load")   # the Hopper ops


def _target(op: Op, ps) -> Optional[str]:
    """The barrier an op touches, given the process's pipeline state."""
    _, head, tail, _, _, _ = ps
    kind = op[0]
    if kind == "acquire":
        return f"consumed[{head}]"
    if kind == "commit":
        return f"produced[{head}]"
    if kind == "wait":
        return f"produced[{tail}]"
    if kind == "release":
        return f"consumed[{tail}]"
    if kind in ("sync", "arrive", "waitbar") or kind in _MBAR_OPS:
        return op[1]
    return None



def _settle(pending: int, phase: int, mask: int, tx: int, expected: int, p: Optional[int]):
    """Complete every phase whose arrivals are all in and whose transaction count is back at zero."""
    while pending >= expected and tx == 0:
        pending -= expected
        phase += 1
        mask = (1 << p) if pending and p is not None else 0
    return pending, phase, mask, tx


def _arrive(bars: list, i: int, weight: int, expected: int, p: int, tx_bytes: int = 0) -> bool:
    """Arrive with ``weight`` threads of process ``p`` (after adding ``tx_bytes`` to the transaction count, as
    arrive.expect_tx does); True if ``p`` had already arrived in this phase."""
    pending, phase, mask, tx = bars[i]
    over = bool(mask >> p & 1)
    bars[i] = _settle(pending + weight, phase, mask | 1 << p, tx + tx_bytes, expected, p)
    return over


class _Reads:
    """Who reads which data from which buffer, at each program counter (programs are unrolled, so this is static).

    A read starts at an ``mbar_wait`` whose ``holds`` names (buffer, data) pairs and ends at an ``mbar_arrive``'s
    (or a ``work`` step's) ``releases``. ``held[p][pc]``: the (buffer index, data) pairs process p reads at pc;
    ``starts[p]``: (buffer index, data) → the pc of the wait where p starts reading it; ``fills[buffer index]``:
    the data written into that buffer, in the order the ``tma_load`` ops issue them.
    """

    def __init__(self, model: Model):
        index = {b: i for i, b in enumerate(model.buffers)}
        self.held: List[List[frozenset]] = []
        self.starts: List[Dict[Tuple[int, str], int]] = []
        self.fills: List[List[str]] = [[] for _ in model.buffers]
        for proc in model.processes:
            for op in proc.program:
                if op[0] == "tma_load" and op[4] not in self.fills[index[op[2]]][-1:]:
                    self.fills[index[op[2]]].append(op[4])
        for proc in model.processes:
            cur: Dict[int, str] = {}
            held, starts = [frozenset()], {}
            for pc, op in enumerate(proc.program):
                if op[0] == "mbar_wait":
                    for buf, data in op[3]:
                        cur[index[buf]] = data
                        starts.setdefault((index[buf], data), pc)
                elif op[0] == "mbar_arrive" or (op[0] == "work" and len(op) > 2):
                    for buf in op[-1]:
                        cur.pop(index[buf], None)
                held.append(frozenset(cur.items()))
            self.held.append(held)
            self.starts.append(starts)


def _step(model: Model, idx: Dict[str, int], procs, bars, p: int, flight=(), contents=()):
    """Try to move process ``p`` one step: (new_procs, new_bars, label, over, new_flight, new_contents, detail) or
    None if blocked or finished. ``detail`` (Hopper ops only) names the barrier and the phase the step saw."""
    proc = model.processes[p]
    ps = procs[p]
    pc, head, tail, cpar, ppar, token = ps
    if pc >= len(proc.program):
        return None
    op = proc.program[pc]
    kind = op[0]
    bars = list(bars)
    bname = _target(op, ps)
    label = kind if kind != "work" else op[1]
    over = False
    detail = None
    if kind in _MBAR_OPS:
        i = idx[bname]
        pending, phase, mask, tx = bars[i]
        detail = dict(barrier=bname, phase=phase)
        if kind == "mbar_wait":
            if (phase & 1) == op[2]:
                return None
            reads = f" → reads {', '.join(f'{d} in {b}' for b, d in op[3])}" if op[3] else ""
            done = f"phase {phase - 1} done" if phase else "passes at once (parity 1: the phase before phase 0)"
            label = f"try_wait.parity({op[2]}) {bname}: {done}{reads}"
        elif kind == "mbar_arrive":
            over = _arrive(bars, i, op[2], model.barriers[bname], p)
            done = f" (done reading {', '.join(op[3])})" if op[3] else ""
            label = f"arrive {bname}{'' if op[2] == 1 else f' ×{op[2]}'}{done}"
        elif kind == "mbar_arrive_tx":
            over = _arrive(bars, i, op[2], model.barriers[bname], p, op[3])
            label = f"arrive.expect_tx {bname} +{op[3]} B{'' if op[2] == 1 else f' ×{op[2]}'}"
        elif kind == "mbar_expect_tx":
            bars[i] = _settle(pending, phase, mask, tx + op[2], model.barriers[bname], None)
            label = f"expect_tx {bname} +{op[2]} B"
        else:                                           # tma_load: the copy is in flight; the issuer moves on
            buf = model.buffers.index(op[2])
            flight = tuple(sorted(flight + ((i, buf, op[3], op[4]),)))
            contents = contents[:buf] + (op[4],) + contents[buf + 1:]
            label = f"TMA {op[4]} → {op[2]} ({op[3]} B on {bname})"
        new = (pc + 1, head, tail, cpar, ppar, token)
        if bars[i][1] != phase:
            detail["completes"] = phase
    elif kind == "release0":               # a consumer that skips consumer_release but moves its tail on
        tail += 1
        if tail == model.stages:
            tail, ppar = 0, ppar ^ 1
        new = (pc + 1, head, tail, cpar, ppar, token)
        label = "(skips consumer_release)"
    elif kind == "work":
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "acquire":
        if (bars[idx[bname]][1] & 1) == cpar:
            return None
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "wait":
        if (bars[idx[bname]][1] & 1) == ppar:
            return None
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "commit":
        over = _arrive(bars, idx[bname], proc.threads, model.barriers[bname], p)
        head += 1
        if head == model.stages:
            head, cpar = 0, cpar ^ 1
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "release":
        over = _arrive(bars, idx[bname], proc.threads, model.barriers[bname], p)
        tail += 1
        if tail == model.stages:
            tail, ppar = 0, ppar ^ 1
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "arrive":
        over = _arrive(bars, idx[bname], proc.threads, model.barriers[bname], p)
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "waitbar":
        if (bars[idx[bname]][1] & 1) == op[2]:
            return None
        new = (pc + 1, head, tail, cpar, ppar, token)
    elif kind == "sync":
        if token < 0:                                   # first micro-step: arrive, remember the phase
            before = bars[idx[bname]][1]
            over = _arrive(bars, idx[bname], proc.threads, model.barriers[bname], p)
            new = (pc, head, tail, cpar, ppar, before)
            label = f"sync {bname} (arrive)"
        else:                                           # second: leave once that phase has completed
            if bars[idx[bname]][1] <= token:
                return None
            new = (pc + 1, head, tail, cpar, ppar, -1)
            label = f"sync {bname}"
    else:
        raise ValueError(f"unknown op {op!r} in {proc.name}")
    procs = procs[:p] + (new,) + procs[p + 1:]
    if kind in ("acquire", "commit", "wait", "release"):
        label = f"{ {'acquire': 'producer_acquire', 'commit': 'producer_commit', 'wait': 'consumer_wait', 'release': 'consumer_release'}[kind]} {bname}".strip()
    return procs, tuple(bars), label, over, flight, contents, detail


def _land(model: Model, bnames: List[str], bars, flight):
    """The TMA engine's moves: land any one in-flight copy (complete_tx of its bytes on its barrier)."""
    seen = set()
    for k, copy in enumerate(flight):
        if copy in seen:                    # two identical copies in flight: landing either gives the same state
            continue
        seen.add(copy)
        i, buf, nbytes, what = copy
        bars2 = list(bars)
        pending, phase, mask, tx = bars2[i]
        bars2[i] = _settle(pending, phase, mask, tx - nbytes, model.barriers[bnames[i]], None)
        detail = dict(barrier=bnames[i], phase=phase)
        if bars2[i][1] != phase:
            detail["completes"] = phase
        label = f"complete_tx {bnames[i]} −{nbytes} B ({what} landed in {model.buffers[buf]})"
        yield tuple(bars2), flight[:k] + flight[k + 1:], label, detail


@dataclass
class Result:
    model: str
    deadlock: bool
    states: int
    transitions: int
    terminal_states: int
    trace: List[dict] = field(default_factory=list)      # shortest path to the deadlock (empty if none)
    stuck: List[dict] = field(default_factory=list)      # what each unfinished process waits for, at the deadlock
    barriers: List[dict] = field(default_factory=list)   # barrier states at the deadlock
    processes: List[dict] = field(default_factory=list)
    note: str = ""
    truncated: bool = False
    over_arrival: Optional[dict] = None                  # shortest trace to a double arrival in one phase
    safety_checked: bool = False                         # the model has buffers: reads vs TMA writes were checked
    safety: Optional[dict] = None                        # the shortest trace to any unsafe step (below)
    safety_kinds: Dict[str, dict] = field(default_factory=dict)   # kind → shortest trace to that kind of unsafe step
    tx_mismatch: Optional[dict] = None                   # a phase that completed with bytes in flight, or never will

    def to_dict(self) -> dict:
        out = dict(model=self.model, deadlock=self.deadlock, states=self.states, transitions=self.transitions,
                   terminal_states=self.terminal_states, trace=self.trace, stuck=self.stuck,
                   barriers=self.barriers, processes=self.processes, note=self.note, truncated=self.truncated,
                   over_arrival=self.over_arrival)
        if self.safety_checked:             # pipeline models keep the record layout chapter 2 was built from
            out.update(safety_checked=True, safety=self.safety, safety_kinds=self.safety_kinds,
                       tx_mismatch=self.tx_mismatch, violated=self.violated, verdict=self.verdict)
        return out

    @property
    def violated(self) -> List[str]:
        """The properties this model breaks: "deadlock", the safety kinds found (:data:`SAFETY_KINDS`),
        "over-arrival", "tx mismatch" (empty: none)."""
        out = ["deadlock"] if self.deadlock else []
        out += list(self.safety_kinds)
        if self.over_arrival is not None:
            out.append("over-arrival")
        if self.tx_mismatch is not None:
            out.append("tx mismatch")
        return out

    @property
    def verdict(self) -> str:
        if self.safety is not None:
            s = self.safety
            head = (f"DEADLOCK after {len(self.trace)} steps, and " if self.deadlock else "")
            return (f"{head}{s['kind'].upper()} after {len(s['trace'])} steps: {s['message']} "
                    f"({self.states} states explored{', search truncated' if self.truncated else ''})")
        if self.deadlock:
            tx = f": {self.tx_mismatch['message']}" if self.tx_mismatch else ""
            return f"DEADLOCK after {len(self.trace)} steps ({self.states} states explored){tx}"
        if self.truncated:
            return f"no deadlock found in {self.states} states (search truncated: not a proof)"
        extra = "" if self.over_arrival is None else "; but a barrier over-arrives (a phase completes early: a race)"
        if self.safety_checked:
            extra += "; no buffer is written while it is read"
            if self.tx_mismatch is not None:
                extra += "; but a phase completes with bytes in flight"
        return f"deadlock-free: all {self.states} reachable states explored, none stuck{extra}"


def _describe_stuck(model: Model, idx, procs, bars) -> Tuple[list, list]:
    stuck = []
    for p, (proc, ps) in enumerate(zip(model.processes, procs)):
        pc = ps[0]
        if pc >= len(proc.program):
            continue
        op = proc.program[pc]
        bname = _target(op, ps)
        pending, phase = bars[idx[bname]][:2] if bname else (None, None)
        if op[0] == "acquire":
            waits = f"phase with parity {ps[3]} of {bname}"
        elif op[0] == "wait":
            waits = f"phase with parity {ps[4]} of {bname}"
        elif op[0] == "mbar_wait":
            waits = f"phase with parity {op[2]} of {bname}"
        elif op[0] == "sync":
            waits = f"phase {ps[5]} of {bname} to complete"
        else:
            waits = f"{bname}"
        row = dict(process=proc.name, role=proc.role, threads=proc.threads, pc=pc, op=op[0], barrier=bname,
                   waits_for=waits, arrived=pending, expected=model.barriers.get(bname), phase=phase)
        if model.has_tma and bname:
            row["tx_pending"] = bars[idx[bname]][3]
        stuck.append(row)
    barriers = [dict(barrier=n, expected=model.barriers[n], pending_arrivals=bars[i][0], phase=bars[i][1])
                for n, i in idx.items()]
    if model.has_tma:
        for row, (n, i) in zip(barriers, idx.items()):
            row["tx_pending"] = bars[i][3]
    return stuck, barriers


def _path(parent, model, state) -> List[dict]:
    steps = []
    s = state
    while parent[s] is not None:
        prev, p, label, detail = parent[s]
        step = dict(process=model.processes[p].name, role=model.processes[p].role, op=label, pc=prev[0][p][0])
        if detail:
            step.update(detail)
        steps.append(step)
        s = prev
    steps.reverse()
    for i, st in enumerate(steps):
        st["step"] = i
    return steps


SAFETY_KINDS = ("overwrite", "overwrite before read", "read before landed", "stale read")


def _unsafe(model: Model, reads: _Reads, procs, flight, contents, p: int, op: Op) -> List[Tuple[str, str]]:
    """The safety violations of process ``p`` doing ``op`` in this state: [(kind, sentence)] (empty: safe).

    A TMA write into a buffer must not start while any process still needs the data in it: one still reading it
    ("overwrite") or one that will read it and has not yet ("overwrite before read"); a copy of the same data again
    (one tile loaded as several boxes) continues the fill. A read must find its data
    landed: not in flight
    or not issued yet: its phase completed before the bytes did, "read before landed") and not already replaced by
    later data ("stale read": the wait passed a phase too late). Checked on every transition, so no reachable state
    can have a copy in flight into a buffer that a process reads. Fill order is the order of the ``tma_load`` ops in
    the programs (one producer issues them all in the models here).
    """
    who = model.processes[p].name
    fills = reads.fills
    found = []
    if op[0] == "tma_load":
        buf = model.buffers.index(op[2])
        old = contents[buf]
        for q, qs in enumerate(procs):
            if q == p or not old or old == op[4]:        # same data again: another box of the same fill
                continue
            name = model.processes[q].name
            if (buf, old) in reads.held[q][qs[0]]:
                found.append(("overwrite", f"{who} starts the TMA write of {op[4]} into {op[2]} while {name} "
                                           f"still reads {old} there (it has not released {op[2]})"))
            elif qs[0] <= reads.starts[q].get((buf, old), -1):
                found.append(("overwrite before read", f"{who} starts the TMA write of {op[4]} into {op[2]} before "
                                                       f"{name} has read {old} there"))
    elif op[0] == "mbar_wait":
        for bname, data in op[3]:
            buf = model.buffers.index(bname)
            order = fills[buf]
            now = contents[buf]
            if now != data and (not now or order.index(data) > order.index(now)):
                found.append(("read before landed", f"{who} passes {op[1]} to read {data} in {bname} before its "
                                                    f"TMA write was issued ({bname} holds {now or 'nothing'} yet)"))
            elif now != data:
                found.append(("stale read", f"{who} passes {op[1]} to read {data} in {bname}, but {now} has "
                                            f"already replaced it"))
            elif any(c[1] == buf for c in flight):
                found.append(("read before landed", f"{who} reads {data} in {bname} while its TMA write is still in "
                                                    f"flight ({op[1]} completed before the bytes landed)"))
    return found


def check(model: Model, max_states: int = 2_000_000, stop_at_deadlock: Optional[bool] = None) -> Result:
    """Breadth-first search over every interleaving; the first stuck state found is one nearest the start.

    Also reports the shortest trace to the first *over-arrival* (a process arriving twice in one barrier phase:
    the phase then completes before everyone it should wait for has arrived — a race, not a hang). For models with
    buffers (TMA models) it checks every transition of every reachable state against the safety property
    (:func:`_unsafe`) and reports the shortest trace to each kind of violation, and the first phase that completes
    with bytes still in flight. ``stop_at_deadlock`` (default: only for models without buffers) ends the search at
    the first deadlock; TMA models are searched to the end, so that a deadlock cannot hide an overwrite that needs
    more steps.
    """
    if stop_at_deadlock is None:
        stop_at_deadlock = not model.buffers
    idx = _bar_index(model)
    bnames = list(model.barriers)
    reads = _Reads(model) if model.buffers else None
    start = _initial(model)
    parent: Dict = {start: None}
    queue = deque([start])
    transitions = terminal = 0
    n = len(model.processes)
    found = None
    over_at = early_at = None
    unsafe_at: Dict[str, tuple] = {}
    truncated = False
    while queue:
        state = queue.popleft()
        procs, bars, flight, contents = state
        moved = False
        children = []
        for p in range(n):
            if model.processes[p].engine:
                for bars2, flight2, label, detail in _land(model, bnames, bars, flight):
                    children.append((p, (procs, bars2, flight2, contents), label, False, detail))
                continue
            nxt = _step(model, idx, procs, bars, p, flight, contents)
            if nxt is None:
                continue
            if reads is not None and len(unsafe_at) < len(SAFETY_KINDS):
                op = model.processes[p].program[procs[p][0]]
                for kind, message in _unsafe(model, reads, procs, flight, contents, p, op):
                    unsafe_at.setdefault(kind, (state, p, nxt[2], nxt[6], message))
            children.append((p, (nxt[0], nxt[1], nxt[4], nxt[5]), nxt[2], nxt[3], nxt[6]))
        for p, child, label, over, detail in children:
            moved = True
            transitions += 1
            if child in parent:
                continue
            parent[child] = (state, p, label, detail)
            queue.append(child)
            if over and over_at is None:
                over_at = (child, p, label)
            if reads is not None and early_at is None and detail and "completes" in detail:
                i = idx[detail["barrier"]]
                late = sum(c[2] for c in child[2] if c[0] == i)
                if late:
                    early_at = (child, detail, late)
        if not moved:
            if all(ps[0] >= len(pr.program) for ps, pr in zip(procs, model.processes)) and not flight:
                terminal += 1
            elif found is None:
                found = state
                if stop_at_deadlock:
                    break
        if len(parent) > max_states:
            truncated = True
            break
    procs_info = [dict(name=p.name, role=p.role, threads=p.threads, steps=len(p.program)) for p in model.processes]
    over = None
    if over_at is not None:
        over = dict(process=model.processes[over_at[1]].name, op=over_at[2], trace=_path(parent, model, over_at[0]))
    kinds = {}
    for kind in SAFETY_KINDS:
        if kind in unsafe_at:
            state, p, label, detail, message = unsafe_at[kind]
            trace = _path(parent, model, state)
            last = dict(process=model.processes[p].name, role=model.processes[p].role, op=label, pc=state[0][p][0],
                        **(detail or {}), step=len(trace))
            kinds[kind] = dict(kind=kind, process=last["process"], op=label, message=message, trace=trace + [last])
    safety = min(kinds.values(), key=lambda v: len(v["trace"])) if kinds else None
    tx = None
    if early_at is not None:
        child, detail, late = early_at
        tx = dict(kind="completes early", barrier=detail["barrier"], phase=detail["phase"], bytes_in_flight=late,
                  message=f"phase {detail['phase']} of {detail['barrier']} completed with {late} B still in flight "
                          f"(expect_tx counted fewer bytes than the copies deliver)",
                  trace=_path(parent, model, child))
    extra = dict(safety_checked=reads is not None, safety=safety, safety_kinds=kinds, tx_mismatch=tx,
                 truncated=truncated)
    if found is None:
        return Result(model.name, False, len(parent), transitions, terminal, processes=procs_info, note=model.note,
                      over_arrival=over, **extra)
    stuck, barriers = _describe_stuck(model, idx, *found[:2])
    if reads is not None and tx is None:
        extra["tx_mismatch"] = _never_completes(stuck)
    return Result(model.name, True, len(parent), transitions, terminal, trace=_path(parent, model, found),
                  stuck=stuck, barriers=barriers, processes=procs_info, note=model.note, over_arrival=over, **extra)


def simulate(model: Model, schedule: Sequence) -> List[dict]:
    """Run one interleaving by hand: ``schedule`` lists the process to move at each step (for the TMA engine a
    (name, data) pair picks which copy lands; its name alone lands the oldest-sorted one). Returns, after each step,
    {step, process, op, barriers: {name: {phase, arrivals, tx}}, in_flight: [data]}; raises ValueError naming the
    step if the process cannot move there (blocked or finished). For unit tests and for showing one run in a book.
    """
    idx = _bar_index(model)
    bnames = list(model.barriers)
    names = {p.name: i for i, p in enumerate(model.processes)}
    procs, bars, flight, contents = _initial(model)
    out = []
    for n, entry in enumerate(schedule):
        name, data = (entry, None) if isinstance(entry, str) else entry
        p = names[name]
        if model.processes[p].engine:
            moves = [m for m in _land(model, bnames, bars, flight) if data is None or f"({data} landed" in m[2]]
            if not moves:
                raise ValueError(f"step {n}: {name} has no copy{'' if data is None else f' of {data}'} in flight")
            bars, flight, label, _ = moves[0]
        else:
            nxt = _step(model, idx, procs, bars, p, flight, contents)
            if nxt is None:
                raise ValueError(f"step {n}: {name} cannot move (blocked or finished)")
            procs, bars, label, _, flight, contents, _ = nxt
        out.append(dict(step=n, process=name, op=label, in_flight=[c[3] for c in flight],
                        barriers={b: dict(phase=bars[i][1], arrivals=bars[i][0], tx=bars[i][3])
                                  for b, i in idx.items()}))
    return out


def _never_completes(stuck: List[dict]) -> Optional[dict]:
    """At a deadlock: a waited-on barrier with all its arrivals in but transaction bytes that nothing will deliver."""
    for s in stuck:
        if s["op"] == "mbar_wait" and s.get("tx_pending") and s["arrived"] >= s["expected"]:
            return dict(kind="never completes", barrier=s["barrier"], phase=s["phase"], bytes_missing=s["tx_pending"],
                        message=f"phase {s['phase']} of {s['barrier']} has all {s['expected']} arrivals but waits "
                                f"for {s['tx_pending']} B that no copy will deliver (expect_tx counted more bytes "
                                f"than the copies deliver)")
    return None


# ----------------------------------------------------------------------------------------------- the models
def pipeline_counts(flavour: str, block: int, producers: int) -> Tuple[int, int]:
    """(produced expected, consumed expected) as libcu++'s make_pipeline overloads initialise them."""
    if flavour == "roleless":            # make_pipeline(group, &state): everyone is producer and consumer
        return block, block
    if flavour in ("role", "count"):     # make_pipeline(group, &state, role) / (group, &state, producer_count)
        return producers, block - producers
    raise ValueError(f"unknown make_pipeline flavour {flavour!r}")


def _pipeline_barriers(stages: int, produced: int, consumed: int) -> Dict[str, int]:
    out = {}
    for s in range(stages):
        out[f"produced[{s}]"] = produced
        out[f"consumed[{s}]"] = consumed
    return out


def textbook(items: int = 4, stages: int = 2) -> Model:
    """One producer warp, one consumer warp, a partitioned pipeline: correct by construction."""
    prod = [op for i in range(items) for op in (("acquire",), ("work", f"copy {i}"), ("commit",))]
    cons = [op for i in range(items) for op in (("wait",), ("work", f"use {i}"), ("release",))]
    return Model("textbook producer/consumer", [Process("producer", 32, prod, "producer"),
                                                Process("consumer", 32, cons, "consumer")],
                 _pipeline_barriers(stages, 32, 32), stages=stages, block_threads=64,
                 note="make_pipeline(block, &state, role): produced expects 32, consumed expects 32")


def missing_arrival(items: int = 4, stages: int = 2, skip: int = 0) -> Model:
    """As :func:`textbook`, but the consumer forgets to release item ``skip``: one arrival short."""
    m = textbook(items, stages)
    cons = []
    for i in range(items):
        cons += [("wait",), ("work", f"use {i}")]
        if i != skip:
            cons.append(("release",))
        else:   # the pipeline's tail must still advance for the next wait: model the bug as a release that arrives 0
            cons.append(("release0",))
    m.processes[1].program = cons
    m.name = "missing arrival"
    m.note = f"the consumer skips consumer_release() for item {skip}"
    return m


def branch_barrier() -> Model:
    """``if (warp == 0) __syncthreads();`` then warp 1 waits for data warp 0 publishes after the barrier."""
    w0 = [("work", "compute"), ("sync", "block"), ("arrive", "ready")]
    w1 = [("work", "compute"), ("work", "skip the branch"), ("waitbar", "ready", 0)]
    return Model("barrier inside a branch", [Process("warp 0", 32, w0, "taken"), Process("warp 1", 32, w1, "skipped")],
                 {"block": 64, "ready": 32}, block_threads=64,
                 note="__syncthreads counts all 64 threads; warp 1 never reaches it")


def v11(tiles: int = 3, query_tiles: int = 1, fixed: bool = False, flavour: str = "roleless",
        load_releases: bool = True, load_consumes: bool = True, split: int = 1) -> Model:
    """v11's synchronization: roles load (4 warps), compute (11), softmax (1); 2-stage pipeline; 4 barriers a tile.

    ``fixed``: every thread acquires and commits (only load warps copy). ``flavour``: how make_pipeline was called
    ("roleless" as in v11; "role" = producers are the load warps). ``load_releases``: load warps call
    consumer_release (as designed). ``load_consumes=False``: load warps call neither consumer_wait nor
    consumer_release (v11_fixed_roles / v11_fixed_mbarrier). ``split``: processes per role (each role's warps
    split evenly).
    """
    block, stages = 512, 2
    roles = [("load", 128), ("compute", 352), ("softmax", 32)]
    prod_count = 128
    produced, consumed = pipeline_counts(flavour, block, prod_count)
    procs = []
    for role, threads in roles:
        parts = split if threads // 32 >= split else 1
        for j in range(parts):
            prog: List[Op] = []

            def load(tile):
                if role == "load" or fixed:
                    prog.append(("acquire",))
                    if role == "load":
                        prog.append(("work", f"copy K,V {tile}"))
                    prog.append(("commit",))

            for qt in range(query_tiles):
                prog.append(("work", "load Q"))
                prog.append(("sync", "block"))
                load(0)
                for i in range(tiles):
                    if i + 1 < tiles:
                        load(i + 1)
                    if role != "load" or load_consumes:
                        prog.append(("wait",))
                    if role == "compute":
                        prog.append(("work", f"QK {i}"))
                    prog.append(("sync", "block"))
                    if role == "softmax":
                        prog.append(("work", f"softmax {i}"))
                    prog.append(("sync", "block"))
                    if role == "compute":
                        prog.append(("work", f"PV {i}"))
                    if role != "load" or load_releases:
                        prog.append(("release",))
                    elif load_consumes:
                        prog.append(("release0",))
                    prog.append(("sync", "block"))
                prog.append(("work", "store O"))
                prog.append(("sync", "block"))
            name = role if parts == 1 else f"{role} {j}"
            procs.append(Process(f"{name} ({threads // parts} thr)", threads // parts, prog, role))
    bars = _pipeline_barriers(stages, produced, consumed)
    bars["block"] = block
    what = "v11 fixed" if fixed else ("v11 with roles" if flavour != "roleless" else "v11 as designed")
    note = (f"make_pipeline {flavour}: produced expects {produced}, consumed expects {consumed}; "
            f"{'all 512 threads' if fixed else 'only the 128 load-warp threads'} acquire+commit; "
            f"{'' if load_consumes else 'load warps neither wait nor release; '}"
            f"{tiles} key tiles × {query_tiles} query tile(s)")
    return Model(what, procs, bars, stages=stages, block_threads=block, note=note)


def chapter_models(tiles: int = 3) -> Dict[str, Model]:
    return {"textbook": textbook(), "missing_arrival": missing_arrival(), "branch_barrier": branch_barrier(),
            "v11": v11(tiles), "v11_fixed": v11(tiles, fixed=True),
            "v11_fixed_2qtiles": v11(tiles, query_tiles=2, fixed=True),
            "v11_role_overrelease": v11(tiles, flavour="role"),
            "v11_roles": v11(tiles, flavour="role", load_releases=False, load_consumes=False),
            "v11_roles_2qtiles": v11(tiles, query_tiles=2, flavour="role", load_releases=False,
                                     load_consumes=False)}


def run_all(tiles: int = 3) -> Dict[str, dict]:
    """Every chapter model checked: {name: Result.to_dict()} (JSON-ready, stored in the run record)."""
    return {name: check(m).to_dict() for name, m in chapter_models(tiles).items()}


# ----------------------------------------------------------------------------------------------- Hopper models
KV_TILE_BYTES = 128 * 64 * 2       # one 128-key × 64-dim fp16 tile of K (or of V): 16 KiB
Q_ROWS_PER_WARPGROUP = 64          # a wgmma's M: each consumer warpgroup owns 64 query rows
WARPGROUP = 128


def _warp_groups(consumer_warps: int) -> List[Tuple[str, int, bool]]:
    """How a consumer warpgroup's 4 warps are split into processes: (name suffix, threads, holds the elected thread)."""
    if consumer_warps == 1:
        return [("", WARPGROUP, True)]
    if consumer_warps == 2:            # the elected warp apart from the three that only compute: enough to see a race
        return [(" warp 0", 32, True), (" warps 1-3", 96, False)]
    if consumer_warps == 4:
        return [(f" warp {w}", 32, w == 0) for w in range(4)]
    raise ValueError("consumer_warps is 1 (the warpgroup as one process), 2 or 4")


def hopper_ws(stages: int = 2, consumers: int = 2, tiles: int = 3, producer_threads: int = 1, *,
              k_bytes: int = KV_TILE_BYTES, v_bytes: int = KV_TILE_BYTES, head_dim: int = 64, load_q: bool = True,
              expect_bytes: Optional[int] = None, full_count: Optional[int] = None,
              empty_count: Optional[int] = None, producer_start_parity: int = 1, overlap: bool = False,
              consumer_warps: int = 1, warpgroup_sync: bool = True, per_warp_release: bool = False,
              name: str = "hopper_ws", note: str = "") -> Model:
    """Chapter 5's warp-specialized TMA pipeline: one producer warp, ``consumers`` consumer warpgroups, a ring of
    ``stages`` K/V stages, ``tiles`` key tiles; correct with the defaults, and each keyword can put one bug back.

    The protocol (the kernel must match it):

    * barriers: ``full[s]`` expects ``producer_threads`` arrivals (the elected thread's arrive.expect_tx) plus
      ``K + V`` transaction bytes; ``empty[s]`` expects ``consumers`` arrivals (one elected thread per consumer
      warpgroup); ``Q full`` expects ``producer_threads`` arrivals plus the Q tile's bytes (``load_q``).
    * producer, key tile i in stage s = i mod stages, pass r = i div stages: try_wait.parity(empty[s],
      ``producer_start_parity`` XOR (r & 1)) — it starts on parity 1, the phase "before" phase 0, so the first pass
      does not wait — then arrive.expect_tx(full[s], K + V bytes), then TMA K(i) → K[s] and V(i) → V[s], each
      completing its bytes on full[s].
    * each consumer warpgroup, key tile i: try_wait.parity(full[s], r & 1); it reads K[s] and V[s] from then on;
      compute; then one arrive on empty[s] (after every warp of the warpgroup has retired its wgmmas that read s).

    ``expect_bytes`` (default K + V), ``full_count`` / ``empty_count`` and ``producer_start_parity`` are the knobs
    the faulty variants turn. ``overlap``: a consumer acquires stage j+1 and issues S(j+1) = Q·K(j+1)ᵀ before it
    finishes O += P(j)·V(j) and releases stage j (intra-warpgroup overlap: it holds two stages at once).
    ``consumer_warps`` (1, 2, 4): model a warpgroup's warps as separate processes; then only warp 0's elected thread
    arrives on empty[s], after a named barrier over the warpgroup when ``warpgroup_sync`` (without it, the arrival
    means only that warp 0 is done: ``wgmma.wait_group`` waits for this warp only). 2 (warp 0 apart from warps 1-3)
    stays small: 18 623 states at 2 stages, 2 consumers, 3 tiles; 4 passes two million states there.
    ``per_warp_release``: the kernels' own release (kernels/hopper/hopper_tile.cuh users): no warpgroup barrier;
    lane 0 of EVERY consumer warp arrives once on empty[s] after that warp's wgmma.wait_group, and empty[s] expects
    4 arrivals per consumer warpgroup (a process standing for n warps arrives n times).
    """
    full_count = producer_threads if full_count is None else full_count
    if per_warp_release:
        warpgroup_sync = False
    empty_count = (consumers * (4 if per_warp_release else 1)) if empty_count is None else empty_count
    expect_bytes = k_bytes + v_bytes if expect_bytes is None else expect_bytes
    q_bytes = consumers * Q_ROWS_PER_WARPGROUP * head_dim * 2
    barriers: Dict[str, int] = {}
    buffers: List[str] = []
    if load_q:
        barriers["Q full"] = producer_threads
        buffers.append("Q")
    for s in range(stages):
        barriers[f"full[{s}]"] = full_count
        barriers[f"empty[{s}]"] = empty_count
        buffers += [f"K[{s}]", f"V[{s}]"]

    def slot(i: int) -> Tuple[int, int]:
        return i % stages, (i // stages) & 1

    prod: List[Op] = []
    if load_q:
        prod += [("mbar_arrive_tx", "Q full", producer_threads, q_bytes), ("tma_load", "Q full", "Q", q_bytes, "Q")]
    for i in range(tiles):
        s, r = slot(i)
        prod += [("mbar_wait", f"empty[{s}]", producer_start_parity ^ r, ()),
                 ("mbar_arrive_tx", f"full[{s}]", producer_threads, expect_bytes),
                 ("tma_load", f"full[{s}]", f"K[{s}]", k_bytes, f"K{i}"),
                 ("tma_load", f"full[{s}]", f"V[{s}]", v_bytes, f"V{i}")]
    procs = [Process("producer", producer_threads, prod, "producer")]

    for c in range(consumers):
        if consumer_warps > 1 and warpgroup_sync:
            barriers[f"wg {c}"] = WARPGROUP
        for suffix, threads, elected in _warp_groups(consumer_warps):
            prog: List[Op] = []

            def acquire(i: int):
                s, r = slot(i)
                prog.append(("mbar_wait", f"full[{s}]", r, ((f"K[{s}]", f"K{i}"), (f"V[{s}]", f"V{i}"))))

            def release(i: int, compute: str):
                s, _ = slot(i)
                stage = (f"K[{s}]", f"V[{s}]")
                if consumer_warps == 1:             # the warpgroup's reads end with its one arrival (or its 4 warps')
                    prog.extend([("work", compute), ("mbar_arrive", f"empty[{s}]", 4 if per_warp_release else 1,
                                                      stage)])
                    return
                if per_warp_release:                # every warp: its own reads end, then its own arrival
                    prog.extend([("work", compute, stage), ("mbar_arrive", f"empty[{s}]", threads // 32, ())])
                    return
                prog.append(("work", compute, stage))       # this warp's wgmma.wait_group: its reads are over
                if warpgroup_sync:
                    prog.append(("sync", f"wg {c}"))
                if elected:
                    prog.append(("mbar_arrive", f"empty[{s}]", 1, ()))

            if load_q:
                prog.append(("mbar_wait", "Q full", 0, (("Q", "Q"),)))
            if overlap:
                acquire(0)
                prog.append(("work", "S0 = Q·K0ᵀ"))
                for i in range(tiles):
                    if i + 1 < tiles:
                        acquire(i + 1)
                        release(i, f"S{i + 1} = Q·K{i + 1}ᵀ ∥ softmax, O += P{i}·V{i}")
                    else:
                        release(i, f"softmax, O += P{i}·V{i}")
            else:
                for i in range(tiles):
                    acquire(i)
                    release(i, f"S = Q·K{i}ᵀ, softmax, O += P·V{i}")
            procs.append(Process(f"consumer {c}{suffix}", threads, prog, "consumer"))
    procs.append(Process("TMA engine", 0, [], "copy engine", engine=True))

    protocol = dict(stages=stages, consumers=consumers, tiles=tiles, producer_threads=producer_threads,
                    full_expected_arrivals=full_count, full_expected_tx_bytes=expect_bytes,
                    bytes_delivered_per_stage=k_bytes + v_bytes, empty_expected_arrivals=empty_count,
                    empty_arrivals_per_consumer_warpgroup=4 if per_warp_release else 1,
                    q_full_expected_arrivals=producer_threads if load_q else None,
                    q_bytes=q_bytes if load_q else None,
                    producer_empty_parity=f"{producer_start_parity} XOR ((i / stages) & 1)",
                    consumer_full_parity="(i / stages) & 1", consumer_q_parity=0 if load_q else None,
                    overlap=overlap, consumer_warps=consumer_warps,
                    warpgroup_sync=warpgroup_sync if consumer_warps > 1 else None)
    block = WARPGROUP * (consumers + 1)
    if not note:
        note = (f"full[s] expects {full_count} arrival(s) + {expect_bytes} B (copies deliver {k_bytes + v_bytes} B); "
                f"empty[s] expects {empty_count} ("
                f"{'one per consumer warp: 4 × ' if per_warp_release else 'one per consumer warpgroup: '}{consumers}); "
                f"producer starts on "
                f"parity {producer_start_parity}; {stages} stages, {tiles} key tiles, block of {block} threads")
    return Model(name, procs, barriers, stages=stages, block_threads=block, note=note, buffers=buffers,
                 protocol=protocol)


def hopper_roleless(stages: int = 2, consumers: int = 2, tiles: int = 3, producer_threads: int = 1, **kw) -> Model:
    """v11's bug in the new protocol: every barrier expects the whole block (as role-less ``make_pipeline(block,
    &state)`` initialises them) while only the producer's elected thread arrives on full[s]: it must deadlock."""
    block = WARPGROUP * (consumers + 1)
    return hopper_ws(stages, consumers, tiles, producer_threads, full_count=block, empty_count=block,
                     name="hopper_roleless",
                     note=f"role-less counts: full[s] and empty[s] expect all {block} threads of the block; only the "
                          f"producer arrives on full[s] ({producer_threads}), each consumer warpgroup once on empty[s]",
                     **kw)


def hopper_wrong_parity(stages: int = 2, consumers: int = 2, tiles: int = 3, producer_threads: int = 1,
                        **kw) -> Model:
    """The producer waits on empty[s] starting with parity 0 (the phase no one has completed yet)."""
    return hopper_ws(stages, consumers, tiles, producer_threads, producer_start_parity=0, name="hopper_wrong_parity",
                     note="the producer's first try_wait.parity on empty[s] uses parity 0, not 1", **kw)


def hopper_short_release(stages: int = 2, consumers: int = 2, tiles: int = 3, producer_threads: int = 1,
                         empty_count: int = 1, **kw) -> Model:
    """empty[s] expects fewer arrivals than there are consumer warpgroups: the first release frees the stage."""
    if empty_count >= consumers:
        raise ValueError("a short release needs empty_count < consumers")
    return hopper_ws(stages, consumers, tiles, producer_threads, empty_count=empty_count,
                     name="hopper_short_release",
                     note=f"empty[s] expects {empty_count} arrival(s) but {consumers} consumer warpgroups each "
                          f"release once", **kw)


def hopper_tx_mismatch(stages: int = 2, consumers: int = 2, tiles: int = 3, producer_threads: int = 1,
                       k_bytes: int = KV_TILE_BYTES, **kw) -> Model:
    """arrive.expect_tx counts only K's bytes, but the copies deliver K's and V's on the same barrier."""
    return hopper_ws(stages, consumers, tiles, producer_threads, k_bytes=k_bytes, expect_bytes=k_bytes,
                     name="hopper_tx_mismatch",
                     note=f"arrive.expect_tx(full[s], {k_bytes}) counts K only; K and V copies deliver "
                          f"{k_bytes + kw.get('v_bytes', KV_TILE_BYTES)} B", **kw)


def hopper_warp_release(stages: int = 2, consumers: int = 1, tiles: int = 3, producer_threads: int = 1,
                        warpgroup_sync: bool = False, **kw) -> Model:
    """A consumer warpgroup as its warps: warp 0's elected thread releases a stage once *its* wgmmas retired, while
    the other warps may still read it (``wgmma.wait_group`` waits for this warp only). With ``warpgroup_sync`` a
    named barrier over the warpgroup comes first: the fix."""
    return hopper_ws(stages, consumers, tiles, producer_threads, consumer_warps=2, warpgroup_sync=warpgroup_sync,
                     name="hopper_warp_release" + ("_synced" if warpgroup_sync else ""),
                     note=("warp 0 of each consumer warpgroup arrives on empty[s] "
                           + ("after a named barrier over its warpgroup" if warpgroup_sync else
                              "as soon as its own wgmmas retired; warps 1-3 may still read the stage")), **kw)


def hopper_models(stages: int = 2, consumers: int = 2, tiles: int = 3, **kw) -> Dict[str, Model]:
    """The correct protocol and each of chapter 5's faulty variants, with the same parameters."""
    return {"hopper_ws": hopper_ws(stages, consumers, tiles, **kw),
            "hopper_overlap": hopper_ws(stages, consumers, tiles, overlap=True, name="hopper_overlap",
                                        **kw),
            "hopper_roleless": hopper_roleless(stages, consumers, tiles, **kw),
            "hopper_wrong_parity": hopper_wrong_parity(stages, consumers, tiles, **kw),
            "hopper_short_release": hopper_short_release(stages, consumers, tiles, **kw),
            "hopper_tx_mismatch": hopper_tx_mismatch(stages, consumers, tiles, **kw),
            "hopper_warp_release": hopper_warp_release(stages, 1, tiles, **kw),
            "hopper_warp_release_synced": hopper_warp_release(stages, 1, tiles, warpgroup_sync=True, **kw)}


def first_violation(result: Result) -> Optional[dict]:
    """The shortest counterexample the search found: {kind, steps, message, trace}, or None for a proof."""
    found = []
    if result.deadlock:
        s = result.stuck[0]
        found.append(dict(kind="deadlock", steps=len(result.trace), trace=result.trace,
                          message=f"{len(result.stuck)} process(es) stuck; first: {s['process']} in {s['op']} on "
                                  f"{s['barrier']} ({s['arrived']}/{s['expected']} arrivals in phase {s['phase']})"))
    if result.safety is not None:
        found.append(dict(kind=result.safety["kind"], steps=len(result.safety["trace"]), trace=result.safety["trace"],
                          message=result.safety["message"]))
    if result.over_arrival is not None:
        found.append(dict(kind="over-arrival", steps=len(result.over_arrival["trace"]),
                          trace=result.over_arrival["trace"],
                          message=f"{result.over_arrival['process']} arrives twice in one phase"))
    return min(found, key=lambda v: v["steps"]) if found else None


def run_hopper(stages: int = 2, consumers: int = 2, tiles: int = 3, max_states: int = 2_000_000,
               **kw) -> Dict[str, dict]:
    """Chapter 5's models checked: {name: Result.to_dict() plus verdict, violated, violation (the shortest
    counterexample), protocol, seconds} (JSON-ready, for the run record). ``tiles`` must exceed ``stages``: the
    faults in releasing a stage only show when the stage is filled again. The faulty models are searched to the end
    too; their state spaces grow faster than the correct one's (hopper_tx_mismatch: 3 924 states at the defaults,
    245 510 at 3 stages, 3 consumers, 4 tiles)."""
    if tiles <= stages:
        raise ValueError(f"tiles ({tiles}) must exceed stages ({stages}): with no refill the ring is never reused")
    out = {}
    for name, m in hopper_models(stages, consumers, tiles, **kw).items():
        t0 = time.perf_counter()
        r = check(m, max_states)
        d = r.to_dict()
        d.update(seconds=round(time.perf_counter() - t0, 3), protocol=m.protocol, violation=first_violation(r))
        out[name] = d
    return out


def sweep_hopper(stages: Sequence[int] = (2, 3, 4), consumers: Sequence[int] = (2, 3),
                 tiles: Sequence[int] = (3, 4), wrap: bool = True, **kw) -> List[dict]:
    """The correct protocol over a grid of parameters: one row each (states, seconds, verdict); all must be proofs.

    ``wrap`` adds, per (stages, consumers), tiles = 2·stages + 1: every stage is filled at least twice and stage 0
    three times, so each barrier's parity wraps back to where it started — with tiles ≤ stages no stage is refilled
    and the ring's reuse is not exercised at all (row ``refills``: False).
    """
    rows = []
    for st in stages:
        for c in consumers:
            grid = list(tiles) + ([2 * st + 1] if wrap and 2 * st + 1 not in tiles else [])
            for t in grid:
                t0 = time.perf_counter()
                r = check(hopper_ws(st, c, t, **kw))
                rows.append(dict(stages=st, consumers=c, tiles=t, refills=t > st, states=r.states,
                                 transitions=r.transitions, seconds=round(time.perf_counter() - t0, 3),
                                 deadlock=r.deadlock, safe=r.safety is None, violated=r.violated,
                                 truncated=r.truncated, verdict=r.verdict))
    return rows


def format_trace(result: Result, last: Optional[int] = None, which: str = "deadlock") -> str:
    """The verdict and one trace: ``which`` is "deadlock" (with the stuck processes), "safety", "tx_mismatch" or
    "over_arrival"."""
    lines = [f"{result.model}: {result.verdict}"]
    if which == "deadlock":
        trace = result.trace
    else:
        found = getattr(result, which)
        trace = found["trace"] if found else []
        if found and found.get("message"):
            lines.append(f"  {which}: {found['message']}")
    steps = trace if last is None else trace[-last:]
    for st in steps:
        lines.append(f"  {st['step']:>3}  {st['process']:<22} {st['op']}")
    for s in result.stuck if which == "deadlock" else ():
        tx = f", {s['tx_pending']} tx bytes pending" if s.get("tx_pending") else ""
        lines.append(f"  STUCK {s['process']:<22} in {s['op']} on {s['barrier']}: {s['arrived']} of "
                     f"{s['expected']} arrivals in phase {s['phase']}{tx} (waits for {s['waits_for']})")
    return "\n".join(lines)
