"""``healthmesh dashboard ...``: the hub dashboard's scheduled runs.

Registered on the main app by :mod:`healthmesh.cli`. ``dashboard refresh`` re-runs
dashboard views across the network and stores the results at the hub, as the page's
Refresh button does: run it from cron (e.g. monthly) so the public pages stay current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, out
from healthmesh.errors import ConfigError, HealthmeshError

dashboard_app = typer.Typer(help="The hub's public-health dashboard.", no_args_is_help=True)
app.add_typer(dashboard_app, name="dashboard")


@dashboard_app.command("refresh")
def dashboard_refresh(
    folder: Annotated[Path, typer.Argument(help="Hub folder.")],
    indicator: Annotated[str, typer.Option(help="Indicator or measure name (e.g. "
                                                "diabetes-prevalence), or 'all'.")] = "all",
    period: Annotated[str, typer.Option(help="A year (2025) or a month (2025-03); "
                                             "default: this year.")] = "",
    stratum: Annotated[str, typer.Option(help="Split by sex, age_band or state.")] = "",
    region: Annotated[str, typer.Option(help="Only this region (state).")] = "",
    json_out: JsonFlag = False,
) -> None:
    """Run dashboard views across the network and store their results at the hub."""
    from healthmesh.network.client import HubUnavailable
    from healthmesh.web.dashboard import Dashboard, View
    from healthmesh.web.measures import measures

    if not (folder / "hub.sqlite").exists():
        _fail(f"{folder} is not a hub folder (no hub.sqlite)", ExitCode.CONFIG)
    names = list(measures()) if indicator == "all" else [indicator]
    try:
        views = [View.parse({"indicator": n, "period": period, "stratum": stratum,
                             "region": region}) for n in names]
    except HealthmeshError as exc:
        _fail(str(exc), ExitCode.USAGE)
    board = Dashboard.open(folder)
    done = []
    try:
        for view in views:
            result = board.run(view)
            done.append({"indicator": view.indicator, "period": view.period,
                         "task": result["task"], "epsilon_spent": result["epsilon_spent"],
                         "sites": {s["site"]: s["status"] for s in result["sites"]}})
            if not json_out:
                statuses = ", ".join(f"{k}: {v}" for k, v in done[-1]["sites"].items())
                out.print(f"{view.indicator} {view.period}: {statuses}", highlight=False)
    except HubUnavailable as exc:
        _fail(str(exc), ExitCode.UNAVAILABLE)
    except (ConfigError, HealthmeshError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    finally:
        board.close()
    if json_out:
        _emit_json({"runs": done})
