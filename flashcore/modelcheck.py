"""An explicit-state model checker for a kernel's synchronization: deadlock found as a shortest trace, or proved absent.

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
* **Block barriers** (``__syncthreads``) count every thread of the block: arrive, then wait for the phase to move.
* A ``work`` step does nothing to synchronization (it names the compute in traces).

:func:`check` runs a breadth-first search over all interleavings and returns a :class:`Result`: the shortest trace
to a state where some process has not finished and no process can move (a deadlock), or a proof — every reachable
state explored, none stuck. Builders for the chapter's models are at the bottom (``textbook``, ``missing_arrival``,
``branch_barrier``, ``v11``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# ----------------------------------------------------------------------------------------------- the model
Op = Tuple  # ("acquire",) ("commit",) ("wait",) ("release",) ("sync", bar) ("arrive", bar) ("waitbar", bar, parity)
            # ("work", label)


@dataclass
class Process:
    name: str
    threads: int
    program: List[Op]
    role: str = ""


@dataclass
class Model:
    name: str
    processes: List[Process]
    barriers: Dict[str, int]                 # name → expected arrivals per phase
    stages: int = 0                          # pipeline stages (0: no pipeline)
    block_threads: int = 0
    note: str = ""


# process state: (pc, head, tail, cpar, ppar, token)   token = phase a sync arrival is waiting to see pass (-1: none)
# barrier state: (pending, phase, mask)   mask = processes that arrived in the current phase (a second arrival by the
# same process within one phase is an over-arrival: the phase completes before everyone it waits for has arrived)

def _bar_index(model: Model) -> Dict[str, int]:
    return {n: i for i, n in enumerate(model.barriers)}


def _initial(model: Model):
    procs = tuple((0, 0, 0, 1, 0, -1) for _ in model.processes)
    bars = tuple((0, 0, 0) for _ in model.barriers)
    return procs, bars


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
    if kind in ("sync", "arrive", "waitbar"):
        return op[1]
    return None


def _arrive(bars: list, i: int, weight: int, expected: int, p: int) -> bool:
    """Arrive with ``weight`` threads of process ``p``; True if ``p`` had already arrived in this phase."""
    pending, phase, mask = bars[i]
    over = bool(mask >> p & 1)
    pending += weight
    mask |= 1 << p
    while pending >= expected:
        pending -= expected
        phase += 1
        mask = (1 << p) if pending else 0
    bars[i] = (pending, phase, mask)
    return over


def _step(model: Model, idx: Dict[str, int], procs, bars, p: int):
    """Try to move process ``p`` one step: (new_procs, new_bars, label, over) or None if blocked or finished."""
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
    if kind == "release0":               # a consumer that skips consumer_release but moves its tail on
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
    return procs, tuple(bars), label, over


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

    def to_dict(self) -> dict:
        return dict(model=self.model, deadlock=self.deadlock, states=self.states, transitions=self.transitions,
                    terminal_states=self.terminal_states, trace=self.trace, stuck=self.stuck,
                    barriers=self.barriers, processes=self.processes, note=self.note, truncated=self.truncated,
                    over_arrival=self.over_arrival)

    @property
    def verdict(self) -> str:
        if self.deadlock:
            return f"DEADLOCK after {len(self.trace)} steps ({self.states} states explored)"
        if self.truncated:
            return f"no deadlock found in {self.states} states (search truncated: not a proof)"
        extra = "" if self.over_arrival is None else "; but a barrier over-arrives (a phase completes early: a race)"
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
        elif op[0] == "sync":
            waits = f"phase {ps[5]} of {bname} to complete"
        else:
            waits = f"{bname}"
        stuck.append(dict(process=proc.name, role=proc.role, threads=proc.threads, pc=pc, op=op[0], barrier=bname,
                          waits_for=waits, arrived=pending, expected=model.barriers.get(bname), phase=phase))
    barriers = [dict(barrier=n, expected=model.barriers[n], pending_arrivals=bars[i][0], phase=bars[i][1])
                for n, i in idx.items()]
    return stuck, barriers


def _path(parent, model, state) -> List[dict]:
    steps = []
    s = state
    while parent[s] is not None:
        prev, p, label = parent[s]
        steps.append(dict(process=model.processes[p].name, role=model.processes[p].role, op=label, pc=prev[0][p][0]))
        s = prev
    steps.reverse()
    for i, st in enumerate(steps):
        st["step"] = i
    return steps


def check(model: Model, max_states: int = 2_000_000) -> Result:
    """Breadth-first search over every interleaving; the first stuck state found is one nearest the start.

    Also reports the shortest trace to the first *over-arrival* (a process arriving twice in one barrier phase:
    the phase then completes before everyone it should wait for has arrived — a race, not a hang).
    """
    idx = _bar_index(model)
    start = _initial(model)
    parent: Dict = {start: None}
    queue = deque([start])
    transitions = terminal = 0
    n = len(model.processes)
    found = None
    over_at = None
    truncated = False
    while queue:
        state = queue.popleft()
        procs, bars = state
        moved = False
        for p in range(n):
            nxt = _step(model, idx, procs, bars, p)
            if nxt is None:
                continue
            moved = True
            transitions += 1
            child = (nxt[0], nxt[1])
            if child not in parent:
                parent[child] = (state, p, nxt[2])
                queue.append(child)
                if nxt[3] and over_at is None:
                    over_at = (child, p, nxt[2])
        if not moved:
            if all(ps[0] >= len(pr.program) for ps, pr in zip(procs, model.processes)):
                terminal += 1
            elif found is None:
                found = state
                break
        if len(parent) > max_states:
            truncated = True
            break
    procs_info = [dict(name=p.name, role=p.role, threads=p.threads, steps=len(p.program)) for p in model.processes]
    over = None
    if over_at is not None:
        over = dict(process=model.processes[over_at[1]].name, op=over_at[2], trace=_path(parent, model, over_at[0]))
    if found is None:
        return Result(model.name, False, len(parent), transitions, terminal, processes=procs_info, note=model.note,
                      truncated=truncated, over_arrival=over)
    stuck, barriers = _describe_stuck(model, idx, *found)
    return Result(model.name, True, len(parent), transitions, terminal, trace=_path(parent, model, found),
                  stuck=stuck, barriers=barriers, processes=procs_info, note=model.note, over_arrival=over)


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


def format_trace(result: Result, last: Optional[int] = None) -> str:
    lines = [f"{result.model}: {result.verdict}"]
    steps = result.trace if last is None else result.trace[-last:]
    for st in steps:
        lines.append(f"  {st['step']:>3}  {st['process']:<22} {st['op']}")
    for s in result.stuck:
        lines.append(f"  STUCK {s['process']:<22} in {s['op']} on {s['barrier']}: {s['arrived']} of "
                     f"{s['expected']} arrivals in phase {s['phase']} (waits for {s['waits_for']})")
    return "\n".join(lines)
