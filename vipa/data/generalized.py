"""gRefCOCO's side of the refer layout: its refs file and refs with none or several referents."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

TARGET_KINDS = ("single", "multi", "none")


def target_kind(count: int) -> str:
    """gRefCOCO's sample kinds: ``none``, ``single`` or ``multi`` target."""
    return "none" if count == 0 else "single" if count == 1 else "multi"


def sentences_per_kind(items: Iterable[tuple[int, int]]) -> dict[str, int]:
    """``{"<kind>-target sentences": n}`` from (referent count, sentence count) pairs."""
    counts = dict.fromkeys(TARGET_KINDS, 0)
    for targets, sentences in items:
        counts[target_kind(targets)] += sentences
    return {f"{kind}-target sentences": n for kind, n in counts.items()}


def refs_file(folder: Path, dataset: str, split_by: str) -> Path:
    """``refs(<splitBy>).p``; gRefCOCO's ``grefs(<splitBy>).json``, or its pickle."""
    if dataset != "grefcoco":
        return folder / f"refs({split_by}).p"
    path = folder / f"grefs({split_by}).json"
    return path if path.is_file() or not (folder / f"grefs({split_by}).p").is_file() \
        else folder / f"grefs({split_by}).p"


def generalize(ref: dict[str, Any]) -> None:
    """A gRefCOCO ref in place: ``targets`` the annotation ids (none for ``[-1]``),
    ``ann_id`` / ``category_id`` the first of each (-1 when there is none)."""
    ref["targets"] = tuple(int(a) for a in ref["ann_id"] if int(a) != -1)
    ref["ann_id"] = ref["targets"][0] if ref["targets"] else -1
    categories = ref.get("category_id", -1)
    if isinstance(categories, list):
        categories = next((c for c in categories if int(c) != -1), -1)
    ref["category_id"] = categories
