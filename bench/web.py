"""Web pages: what a server-rendered page costs next to the JSON API it shows.

Measured in one run, in process (httpx ASGITransport, no network):

* the patient's consents page (``/web/me/consents``: token from a cookie, gate reads,
  Jinja2 rendering) against the patient API (``/patient/consents``, the same data as JSON);
* the steward's audit page (50 entries plus a full hash-chain verification) against
  ``healthmesh audit verify``'s core call alone, with 10,000 audit entries;
* a dashboard chart as SVG (Vega-Lite via vl-convert) against the same view's CSV.

Run: ``.venv/bin/python bench/web.py``. Prints medians and ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi import FastAPI  # noqa: E402
from tests.browser import pages, session_headers  # noqa: E402
from tests.test_gate import consent, obs  # noqa: E402
from tests.test_web_console import RUN  # noqa: E402

from healthmesh.api.app import create_app  # noqa: E402
from healthmesh.audit import AuditRecord  # noqa: E402
from healthmesh.node import init_node, open_node  # noqa: E402
from healthmesh.web import install_hub_pages  # noqa: E402
from healthmesh.web.dashboard import View  # noqa: E402


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    folder = init_node(Path(tempfile.mkdtemp()) / "node")
    node = open_node(folder, {"organization": "Organization/city-clinic"})
    node.store.put_many([{"resourceType": "Patient", "id": "p1"}, obs("o1", "p1"),
                         *(consent(f"c{i}", "p1", "HRESCH" if i % 2 else "TREAT")
                           for i in range(20))])
    node.audit.append_many(AuditRecord(actor="Organization/uni", action="read",
                                       patients=("p1",), decision="permit")
                           for _ in range(10_000))
    patient = session_headers(node, "patient", patient="p1")
    steward = session_headers(node, "steward", org="Organization/city-clinic")
    from tests.conftest import patient_bearer

    api = patient_bearer(node, "p1")
    rows = []
    with pages(create_app(node)) as new:
        client = new()
        page = median_ms(lambda: client.get("/web/me/consents", headers=patient), 50)
        json = median_ms(lambda: client.get("/patient/consents", headers=api), 50)
        rows.append(("consents: page vs JSON API", page, json))
        audit_page = median_ms(lambda: client.get("/web/steward/audit", headers=steward), 10)
        verify = median_ms(node.audit.verify, 10)
        rows.append(("audit page (10,000 entries) vs verify() alone", audit_page, verify))
    hub = FastAPI()
    install_hub_pages(hub, Path(tempfile.mkdtemp()))
    hub.state.dashboard.store(View("hypertension-control", "2025"), RUN)
    query = "indicator=hypertension-control&period=2025"
    with pages(hub) as new:
        client = new()
        svg = median_ms(lambda: client.get(f"/web/dashboard/chart-time.svg?{query}"), 10)
        csv = median_ms(lambda: client.get(f"/web/dashboard/data.csv?{query}"), 10)
        rows.append(("dashboard: chart SVG vs CSV", svg, csv))
    print(f"{'measure':50} {'ms':>9} {'baseline ms':>12} {'ratio':>7}")
    for name, value, base in rows:
        print(f"{name:50} {value:9.1f} {base:12.1f} {value / base:7.1f}")
    node.close()


if __name__ == "__main__":
    main()
