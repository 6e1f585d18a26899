"""The one progress bar: tqdm where it is installed and wanted, the items themselves otherwise."""
from __future__ import annotations

from typing import Iterable, Optional


def bar(items: Iterable, desc: str, enabled: bool = True, unit: str = "item", total: Optional[int] = None):
    """A tqdm bar over ``items`` (``total`` for iterators of unknown length); the plain items if ``enabled`` is
    False or tqdm is missing."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:            # tqdm is optional on a GPU host: a bar is a nicety, never a requirement
        return items
    return tqdm(items, desc=desc, unit=unit, dynamic_ncols=True, total=total)
