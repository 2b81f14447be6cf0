"""The hub side: pool the released results of several sites.

Input: one result per site, a :class:`~.base.LocalResult` or its JSON form
(``{"site", "columns": [{"name", "kind"}], "rows": [...], ...}``) *after* disclosure
control. A released cell may be suppressed, written any of these ways::

    {"sex": "male", "count": None}                              # value None
    {"sex": "male", "count": {"value": None, "suppressed": True}}
    {"sex": "male", "count": None, "suppressed": True}          # the whole row
    {"sex": "male", "count": None, "suppressed": ["count"]}     # named cells

Pooling never guesses a suppressed value. Rows are grouped by their stratum columns;
``count`` and ``statistic`` cells are summed over the sites that released them, ``sketch``
cells (lists of bin counts) are summed bin by bin. A pooled cell with any suppressed part
holds the sum of the released parts only (None when no site released it), its column is
listed in the row's ``incomplete`` and the row is marked ``suppressed``; every statistic
derived from it (a rate, a mean, a quantile) is None.
Each pooled row also says how many ``sites`` reported the stratum. A stratum a site did not
list counts as zero there: disclosure control must mark suppressed cells, not drop rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import Column, LocalResult
from .errors import AlgorithmError

__all__ = ["pool_counts", "released"]

Derive = Callable[[dict[str, Any], set[str]], dict[str, Any]]


def pool_counts(results: Sequence[Mapping[str, Any] | LocalResult],
                derive: Derive | None = None) -> list[dict[str, Any]]:
    """Pool count-like results; ``derive(row, incomplete)`` adds derived statistics."""
    sites = [_normalise(r, i) for i, r in enumerate(results)]
    if not sites:
        return []
    columns = _same_columns(sites)
    strata = [c.name for c in columns if c.kind == "stratum"]
    values = [c for c in columns if c.kind != "stratum"]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for _, _, rows in sites:
        for row in rows:
            key = tuple(row.get(s) for s in strata)
            group = groups.setdefault(key, _empty(strata, key, values))
            _add(group, row, values)
    out = []
    for group in groups.values():
        incomplete: set[str] = group.pop("_incomplete")
        parts: dict[str, int] = group.pop("_released")
        row = {k: v for k, v in group.items()}
        for name in incomplete:
            if not parts.get(name):  # suppressed everywhere: nothing released to add up
                row[name] = None
        if derive is not None:
            row.update(derive(row, incomplete))
        row["incomplete"] = sorted(incomplete)
        row["suppressed"] = bool(incomplete)
        out.append(row)
    return sorted(out, key=lambda r: tuple(_sort_key(r.get(s)) for s in strata))


def released(row: Mapping[str, Any], column: str) -> tuple[Any, bool]:
    """``(value, suppressed)`` of one cell of a released row."""
    value = row.get(column)
    suppressed = value is None
    if isinstance(value, Mapping):
        suppressed = bool(value.get("suppressed")) or value.get("value") is None
        value = value.get("value")
    flag = row.get("suppressed")
    if flag is True or (isinstance(flag, list | tuple) and column in flag):
        suppressed = True
    return (None if suppressed else value), suppressed


def _normalise(result: Mapping[str, Any] | LocalResult,
               i: int) -> tuple[str, tuple[Column, ...], list[Mapping[str, Any]]]:
    if isinstance(result, LocalResult):
        return result.site, result.columns, result.rows
    if not isinstance(result, Mapping) or not isinstance(result.get("rows"), list):
        raise AlgorithmError(f"results[{i}]: expected a result with 'columns' and 'rows'")
    try:
        columns = tuple(_column(c) for c in result["columns"])
    except (KeyError, TypeError, ValueError):
        raise AlgorithmError(f"results[{i}].columns: expected [{{'name', 'kind'}}, ...] "
                             "or [[name, kind], ...]") from None
    return str(result.get("site", i)), columns, result["rows"]


def _column(value: Any) -> Column:
    name, kind = (value["name"], value["kind"]) if isinstance(value, Mapping) else value
    if not isinstance(name, str) or kind not in ("stratum", "count", "statistic", "sketch"):
        raise ValueError(value)
    return Column(name, kind)


def _same_columns(sites: list[tuple[str, tuple[Column, ...], Any]]) -> tuple[Column, ...]:
    first_site, columns, _ = sites[0]
    for site, other, _ in sites[1:]:
        if other != columns:
            raise AlgorithmError(f"results disagree on columns: site {site!r} has "
                                 f"{[c.name for c in other]}, site {first_site!r} has "
                                 f"{[c.name for c in columns]}")
    return columns


def _empty(strata: list[str], key: tuple[Any, ...], values: list[Column]) -> dict[str, Any]:
    group: dict[str, Any] = dict(zip(strata, key, strict=True))
    for column in values:
        group[column.name] = None if column.kind == "sketch" else 0
    group["sites"] = 0
    group["_incomplete"] = set()
    group["_released"] = {}
    return group


def _add(group: dict[str, Any], row: Mapping[str, Any], values: list[Column]) -> None:
    group["sites"] += 1
    for column in values:
        value, suppressed = released(row, column.name)
        if suppressed:
            group["_incomplete"].add(column.name)
            continue
        group["_released"][column.name] = group["_released"].get(column.name, 0) + 1
        if column.kind == "sketch":
            group[column.name] = _add_bins(group, column.name, value)
        else:
            group[column.name] += value


def _add_bins(group: dict[str, Any], name: str, bins: Any) -> list[float]:
    if not isinstance(bins, list | tuple):
        raise AlgorithmError(f"{name}: expected a list of bin counts")
    total = group[name] or [0] * len(bins)
    if len(total) != len(bins):
        raise AlgorithmError(f"{name}: sites sent different numbers of bins")
    if any(b is None for b in bins):
        group["_incomplete"].add(name)
    return [t + (b or 0) for t, b in zip(total, bins, strict=True)]


def _sort_key(value: Any) -> tuple[int, str]:
    return (1, "") if value is None else (0, str(value))
