"""Charts and tables of an indicator result: Vega-Lite specifications rendered on the server.

Charts are Vega-Lite specs rendered to SVG or PNG by ``vl-convert`` (the Vega project's
own renderer, no browser and no CDN): a page shows them as images, so they read with
scripts disabled, and the same bytes are the SVG/PNG downloads. Suppressed cells are
never drawn (there is no value to draw); the table marks them.
"""

from __future__ import annotations

import csv
import io
from typing import Any

__all__ = ["bar_spec", "csv_bytes", "latest_period", "line_spec", "network_rows", "render",
           "table_rows"]

WIDTH, HEIGHT = 640, 280


def _rate(row: dict[str, Any]) -> float | None:
    """The released rate of a row (None when suppressed or incomplete)."""
    if row.get("suppressed"):
        return None
    rate = row.get("rate") if "numerator" not in row else None
    if rate is not None:
        return float(rate)
    num, den = row.get("numerator"), row.get("denominator")
    if isinstance(num, int | float) and isinstance(den, int | float) and den > 0:
        return float(num) / float(den)
    return None


def network_rows(rows: list[dict[str, Any]], strata: list[str]) -> list[dict[str, Any]]:
    """The whole network's numerator and denominator per period and stratum.

    The ``indicator`` algorithm pools per site (its rows carry ``site``), so the totals
    over sites are added up here, by the pooling rule of :mod:`healthmesh.algorithms.
    pooling`: a total with any suppressed part is itself suppressed, never estimated."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = (str(row.get("period", "")), *(str(row.get(s, "")) for s in strata))
        total = groups.setdefault(key, {"period": key[0], **dict(zip(strata, key[1:],
                                                                     strict=True)),
                                        "numerator": 0, "denominator": 0,
                                        "suppressed": False, "sites": 0})
        total["sites"] += 1
        if row.get("suppressed") or row.get("numerator") is None \
                or row.get("denominator") is None:
            total["suppressed"] = True
            continue
        total["numerator"] += row["numerator"]
        total["denominator"] += row["denominator"]
    out = list(groups.values())
    for total in out:
        if total["suppressed"]:
            total["numerator"] = total["denominator"] = None
    return out


def table_rows(rows: list[dict[str, Any]], strata: list[str]) -> list[dict[str, Any]]:
    """Rows as the table shows them: period, stratum values, counts, rate, suppressed."""
    out = []
    for row in rows:
        suppressed = bool(row.get("suppressed"))
        out.append({"site": str(row.get("site", "")).removeprefix("Organization/"),
                    "period": str(row.get("period", "")),
                    "strata": [str(row.get(s, "")) for s in strata],
                    "numerator": None if suppressed else row.get("numerator"),
                    "denominator": None if suppressed else row.get("denominator"),
                    "rate": _rate(row), "suppressed": suppressed})
    return sorted(out, key=lambda r: (r["site"], r["period"], r["strata"]))


def latest_period(rows: list[dict[str, Any]]) -> str | None:
    periods = sorted({str(r.get("period")) for r in rows if _rate(r) is not None})
    return periods[-1] if periods else None


def _axis(unit: str) -> dict[str, Any]:
    """The rate axis: a proportion as per cent (0-100 %), or per 1,000 (from 0)."""
    if unit == "per1000":
        return {"field": "rate", "type": "quantitative", "title": "per 1,000",
                "scale": {"zero": True}}
    return {"field": "rate", "type": "quantitative", "title": "rate",
            "axis": {"format": ".0%"}, "scale": {"domain": [0, 1]}}


def _value(rate: float, unit: str) -> float:
    return rate * 1000 if unit == "per1000" else rate


def line_spec(title: str, rows: list[dict[str, Any]], stratum: str | None,
              unit: str = "proportion") -> dict[str, Any]:
    """Rate over time (one line per stratum value)."""
    values = [{"period": str(r["period"]), "rate": _value(rate, unit),
               "group": str(r.get(stratum, "")) if stratum else "all"}
              for r in rows if (rate := _rate(r)) is not None]
    encoding: dict[str, Any] = {
        "x": {"field": "period", "type": "ordinal", "title": "period"}, "y": _axis(unit)}
    if stratum:
        encoding["color"] = {"field": "group", "type": "nominal", "title": stratum}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "width": WIDTH, "height": HEIGHT, "data": {"values": values},
            "mark": {"type": "line", "point": True}, "encoding": encoding}


def bar_spec(title: str, rows: list[dict[str, Any]], field: str,
             unit: str = "proportion") -> dict[str, Any]:
    """Rate per ``field`` value (site, or a stratum) as horizontal bars."""
    values = [{"label": str(r.get(field, "")).removeprefix("Organization/"),
               "rate": _value(rate, unit)} for r in rows if (rate := _rate(r)) is not None]
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "width": WIDTH, "height": max(60, 28 * len(values)),
            "data": {"values": values}, "mark": "bar",
            "encoding": {"y": {"field": "label", "type": "nominal", "title": field},
                         "x": _axis(unit)}}


def render(spec: dict[str, Any], fmt: str) -> bytes:
    """The chart as SVG or PNG bytes."""
    import vl_convert

    if fmt == "svg":
        return str(vl_convert.vegalite_to_svg(spec)).encode("utf-8")
    return bytes(vl_convert.vegalite_to_png(spec, scale=2))


def csv_bytes(network: list[dict[str, Any]], sites: list[dict[str, Any]],
              strata: list[str]) -> bytes:
    """Every pooled and per-site row as CSV; suppressed cells are empty and flagged."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["site", "period", *strata, "numerator", "denominator", "rate",
                     "suppressed"])
    for row in table_rows(network, strata):
        writer.writerow(_csv_row("(all sites)", row))
    for row in table_rows(sites, strata):
        writer.writerow(_csv_row(row["site"], row))
    return buffer.getvalue().encode("utf-8")


def _cell(text: str) -> str:
    """A text cell that a spreadsheet will not run as a formula (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_row(site: str, row: dict[str, Any]) -> list[Any]:
    rate = "" if row["rate"] is None else f"{row['rate']:.6f}"
    return [_cell(site), _cell(row["period"]), *(_cell(s) for s in row["strata"]),
            "" if row["numerator"] is None else row["numerator"],
            "" if row["denominator"] is None else row["denominator"], rate,
            "yes" if row["suppressed"] else "no"]
