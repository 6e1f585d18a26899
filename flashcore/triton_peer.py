"""The Triton peer: ``kernels/triton_attention.py`` behind the library's validation, plus its line counts.

``triton_attention(q, k, v, scale=None)`` takes fp16 CUDA ``[B, H, S, 64]`` torch tensors (``S_kv`` may differ
from ``S_q``), validates them with the library's rules (:mod:`flashcore.validate`: a clear error names the bad
argument before anything is launched; non-contiguous or unaligned inputs are copied), and returns a new tensor
``[B, H, S_q, 64]``. The first call at each ``(S_q, S_kv)`` runs Triton's autotuner (every config of
``CONFIGS`` compiled and timed); :func:`best_config` says what it chose.

The kernel file is imported by path (``kernels/`` is not a package), lazily: :func:`kernel_lines` and
:func:`line_counts` read the source text and need neither Triton nor a GPU.
"""
from __future__ import annotations

import ast
import importlib.util
import io
import sys
import tokenize
from pathlib import Path
from typing import Optional

from .paths import KERNELS_DIR

SOURCE = KERNELS_DIR / "triton_attention.py"
KERNEL_FUNCTION = "attention_fwd"
LAUNCH_FUNCTION = "attention"
CONFIG_LIST = "CONFIGS"
_MODULE_NAME = "flashcore_kernels_triton_attention"
_module = None


def module():
    """``kernels/triton_attention.py`` as a module (imported once; needs Triton)."""
    global _module
    if _module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, SOURCE)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = mod       # Triton's jit looks its function's module up by name
        try:
            spec.loader.exec_module(mod)
        except Exception:
            sys.modules.pop(_MODULE_NAME, None)
            raise
        _module = mod
    return _module


def available() -> bool:
    """True if Triton imports and the kernel module loads (a GPU is still needed to launch)."""
    try:
        module()
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------- line counts
def _code_line_numbers(source: str, first: int = 1, last: Optional[int] = None) -> set:
    """Line numbers (1-based) in [first, last] that hold code: not blank, not only a comment, not a docstring."""
    tree = ast.parse(source)
    doc_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    code = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER, tokenize.ENCODING):
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if line not in doc_lines:
                code.add(line)
    last = last if last is not None else len(source.splitlines())
    return {n for n in code if first <= n <= last}


def _span(tree: ast.Module, name: str) -> tuple:
    """(first, last) source lines of a top-level def (decorators included) or assignment named ``name``."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return first, node.end_lineno
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.lineno, node.end_lineno
    raise LookupError(f"{SOURCE.name} has no top-level {name!r}")


def line_counts(path=None) -> dict:
    """Code lines (no blanks, comments or docstrings), computed from the source: the jitted kernel with its
    decorators (``kernel``), the autotuner's config list (``configs``), the launch wrapper (``launch``), and the
    whole file (``file``, imports included)."""
    source = Path(path or SOURCE).read_text()
    tree = ast.parse(source)
    counts = {}
    for key, name in (("kernel", KERNEL_FUNCTION), ("configs", CONFIG_LIST), ("launch", LAUNCH_FUNCTION)):
        counts[key] = len(_code_line_numbers(source, *_span(tree, name)))
    counts["file"] = len(_code_line_numbers(source))
    return counts


def kernel_lines(path=None) -> int:
    """Code lines of the Triton kernel itself (``attention_fwd`` and its decorators)."""
    return line_counts(path)["kernel"]


# ------------------------------------------------------------------------------------------------ the call
def _config_dict(cfg) -> dict:
    d = dict(cfg.kwargs)
    d.update(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return d


def configs() -> list:
    """Every config the autotuner tries, as dicts (BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    return [_config_dict(c) for c in module().CONFIGS]


def best_config(S_q: int, S_kv: Optional[int] = None) -> Optional[dict]:
    """The autotuner's choice for ``(S_q, S_kv)`` in this process, or None if that pair was not run yet."""
    S_kv = S_q if S_kv is None else S_kv
    tuner = module().attention_fwd
    for key, cfg in getattr(tuner, "cache", {}).items():
        if tuple(key[:2]) == (int(S_q), int(S_kv)):
            return _config_dict(cfg)
    return None


def triton_attention(q, k, v, scale: Optional[float] = None, *, config: Optional[dict] = None, copy: bool = True):
    """softmax(q·kᵀ·scale)·v with the Triton kernel: fp16 CUDA torch tensors ``[B, H, S, 64]`` in, a new tensor
    ``[B, H, S_q, 64]`` out (on q's device, current stream). ``config`` bypasses the autotuner."""
    from .validate import describe, validate

    if type(q).__module__.split(".")[0] != "torch":
        raise TypeError(f"q must be a torch.Tensor (the Triton peer takes torch tensors), got "
                        f"{type(q).__module__}.{type(q).__name__}")
    import torch

    descs = [describe(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v"))]
    plan = validate(*descs, scale=scale, copy=copy, grad_enabled=torch.is_grad_enabled())
    out = torch.empty(plan.out_shape, dtype=q.dtype, device=q.device)
    if plan.empty:
        return out
    mod = module()
    # copy=True: a non-contiguous or unaligned input becomes a fresh contiguous (hence aligned) copy
    q, k, v = (x.clone(memory_format=torch.contiguous_format) if n in plan.copies else x
               for x, n in ((q, "q"), (k, "k"), (v, "v")))
    with torch.cuda.device(q.device):
        mod.attention(q.view(plan.bh, plan.S_q, plan.D), k.view(plan.bh, plan.S_kv, plan.D),
                      v.view(plan.bh, plan.S_kv, plan.D), out.view(plan.bh, plan.S_q, plan.D), plan.scale,
                      config=config)
    return out
