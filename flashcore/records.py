"""Run records: every live run writes ``runs/<gpu-slug>/<run-id>/run.json`` (plus its .ncu-rep files), once.

A record is never edited after it is written: :meth:`Run.save` refuses to overwrite. Replay mode reads the newest
committed record of a notebook for a device; charts are drawn from nothing else. The schema (required fields and
their meaning) is ``runs/schema.json``; :func:`validate` enforces it.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Iterable, Optional

from .paths import RUNS_DIR

SCHEMA_VERSION = 1
PROVENANCE_FIELDS = ("gpu", "sm", "driver", "cuda", "torch", "cupy", "commit", "dirty", "date", "command", "notebook")
RESULT_FIELDS = ("kernel", "B", "H", "S", "D", "dtype", "causal", "max_abs_err", "passed", "deterministic",
                 "median_us", "p10_us", "p90_us", "timing", "ncu_report")


class RecordError(ValueError):
    """A run record is missing something the schema requires, or cannot be found."""


def _clean(x):
    """JSON-safe: NaN/inf become strings that say so (JSON has no NaN), numpy scalars become Python."""
    if isinstance(x, float):
        return x if math.isfinite(x) else repr(x)
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            return _clean(x.item())
        except Exception:
            return str(x)
    return x


def validate(record: dict) -> dict:
    """Raise :class:`RecordError` naming every missing required field; return the record."""
    problems = []
    if not isinstance(record, dict):
        raise RecordError(f"a run record is a JSON object, got {type(record).__name__}")
    prov = record.get("provenance")
    if not isinstance(prov, dict):
        problems.append("provenance (object) is missing")
    else:
        problems += [f"provenance.{f} is missing" for f in PROVENANCE_FIELDS if f not in prov]
    results = record.get("results")
    if not isinstance(results, list):
        problems.append("results (list) is missing")
    else:
        for i, row in enumerate(results):
            missing = [f for f in RESULT_FIELDS if f not in row]
            if missing:
                problems.append(f"results[{i}] ({row.get('kernel', '?')}) lacks {', '.join(missing)}")
    if "run_id" not in record:
        problems.append("run_id is missing")
    if problems:
        raise RecordError("invalid run record: " + "; ".join(problems))
    return record


class Record(dict):
    """A loaded run record (a dict) that knows its folder, with small lookups for chapters."""

    def __init__(self, data: dict, path: Optional[Path] = None):
        super().__init__(data)
        self.path = Path(path) if path else None

    @property
    def dir(self) -> Path:
        if self.path is None:
            raise RecordError("this record was not loaded from a file")
        return self.path.parent

    @property
    def provenance(self) -> dict:
        return self["provenance"]

    def rows(self, **match) -> list:
        """Result rows whose fields equal every ``match`` item (e.g. ``kernel="v12_baseline", S=512``)."""
        return [r for r in self.get("results", []) if all(r.get(k) == v for k, v in match.items())]

    def row(self, **match) -> dict:
        rows = self.rows(**match)
        if not rows:
            raise RecordError(f"run {self.get('run_id')} has no result row with {match}")
        return rows[0]

    def file(self, rel: str) -> Path:
        """A file the record names (an .ncu-rep), resolved against the record's folder."""
        p = self.dir / rel
        if not p.exists():
            raise RecordError(f"run {self.get('run_id')} names {rel}, which is not in {self.dir}")
        return p

    def ext(self, key: str):
        """A chapter's extra data; a clear error when the record lacks it."""
        try:
            return self["extra"][key]
        except KeyError:
            raise RecordError(f"run {self.get('run_id')} has no extra[{key!r}]") from None


class Run:
    """A live run being recorded. ``add_result`` rows, put chapter data in ``extra``, then ``save`` once."""

    def __init__(self, notebook: str, params: Optional[dict] = None, command: str = "",
                 runs_dir: Path = RUNS_DIR, provenance: Optional[dict] = None):
        from . import provenance as prov_mod

        if not notebook or not isinstance(notebook, str):
            raise ValueError(f"notebook must be a non-empty str, got {notebook!r}")
        self.notebook = notebook
        self.params = dict(params or {})
        self.provenance = provenance or prov_mod.collect(notebook, command)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = f"{stamp}-{notebook}"
        self.dir = Path(runs_dir) / self.provenance.get("gpu_slug", "unknown-gpu") / self.run_id
        self.dir.mkdir(parents=True, exist_ok=False)
        self.results: list = []
        self.extra: dict = {}
        self._saved = False

    def add_result(self, kernel: str, B: int, H: int, S: int, D: int = 64, *, check=None, timing=None,
                   ncu_report: Optional[str] = None, S_kv: Optional[int] = None, dtype: str = "float16",
                   causal: bool = False, **fields) -> dict:
        """One result row. ``check`` is a CheckResult (or None), ``timing`` a Timing (or None)."""
        row = dict(kernel=kernel, B=int(B), H=int(H), S=int(S), S_kv=int(S if S_kv is None else S_kv), D=int(D),
                   dtype=dtype, causal=bool(causal), max_abs_err=None, passed=None, deterministic=None,
                   median_us=None, p10_us=None, p90_us=None, timing=None, ncu_report=ncu_report)
        if check is not None:
            row.update(max_abs_err=check.max_abs_err, passed=check.passed, deterministic=check.deterministic,
                       sdpa_err=check.sdpa_err, tol=check.tol, seed=check.seed, unwritten=check.unwritten)
        if timing is not None:
            row.update(median_us=timing.median_us, p10_us=timing.p10_us, p90_us=timing.p90_us,
                       timing=timing.method, mean_us=timing.mean_us, samples=timing.samples)
        row.update(fields)
        self.results.append(row)
        return row

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.dir.resolve()))

    def to_dict(self) -> dict:
        return _clean(dict(schema=SCHEMA_VERSION, run_id=self.run_id, provenance=self.provenance,
                           params=self.params, results=self.results, extra=self.extra,
                           files=sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*")
                                        if p.is_file() and p.name != "run.json")))

    def save(self) -> Path:
        path = self.dir / "run.json"
        if self._saved or path.exists():
            raise RecordError(f"{path} exists: records are written once and never edited")
        data = validate(self.to_dict())
        path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        self._saved = True
        return path


def load(path) -> Record:
    path = Path(path)
    if path.is_dir():
        path = path / "run.json"
    if not path.is_file():
        raise RecordError(f"no run record at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path} is not valid JSON: {exc}") from None
    return Record(validate(data), path)


def all_records(runs_dir: Path = RUNS_DIR) -> Iterable[Record]:
    for p in sorted(Path(runs_dir).glob("*/*/run.json")):
        yield load(p)


def devices(runs_dir: Path = RUNS_DIR) -> list:
    return sorted({p.parent.parent.name for p in Path(runs_dir).glob("*/*/run.json")})


def newest(notebook: str, device: Optional[str] = None, runs_dir: Path = RUNS_DIR) -> Record:
    """The newest record of ``notebook`` (on ``device``, a gpu slug, if given)."""
    found = [r for r in all_records(runs_dir) if r["provenance"].get("notebook") == notebook
             and (device is None or r.dir.parent.name == device)]
    if not found:
        where = f" for device {device!r}" if device else ""
        raise RecordError(f"no recorded run of {notebook!r}{where} under {runs_dir}; record one live on a GPU "
                          f"(devices with records: {', '.join(devices(runs_dir)) or 'none'})")
    return max(found, key=lambda r: (r["provenance"]["date"], r["run_id"]))


def complete_devices(notebooks: Iterable[str], runs_dir: Path = RUNS_DIR) -> list:
    """GPU slugs with a record of every notebook in ``notebooks``, newest complete set first (by the newest
    date among the records that complete it)."""
    wanted = set(notebooks)
    newest_by: dict = {}
    for rec in all_records(runs_dir):
        nb = rec["provenance"].get("notebook")
        if nb in wanted:
            slug = rec.dir.parent.name
            newest_by.setdefault(slug, {})
            d = rec["provenance"].get("date", "")
            newest_by[slug][nb] = max(newest_by[slug].get(nb, ""), d)
    done = [(max(by.values()), slug) for slug, by in newest_by.items() if set(by) == wanted]
    return [slug for _, slug in sorted(done, reverse=True)]
