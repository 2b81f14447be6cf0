"""A real headless Chromium for the page tests: the Debian ``chromium`` package driven by
Playwright's Python package (never ``playwright install``: the machines are offline).

Also: an ASGI app served by uvicorn in a thread (:func:`serve`), axe-core checks
(:func:`axe_violations`, axe-core from npm in ``node_modules``), and screenshots saved
as test artefacts under ``build/screenshots`` (``docs/screenshots`` keeps the current
ones the README shows; ``HEALTHMESH_UPDATE_SCREENSHOTS=1`` refreshes them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("HEALTHMESH_CHROMIUM", "/usr/bin/chromium"))
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
ARTEFACTS = REPO / "build" / "screenshots"
DOCS_SHOTS = REPO / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if not AXE.exists():
        return f"no axe-core at {AXE} (run 'npm ci' in the repository)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def browser_only() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright Browser). Playwright gives every launch
    a fresh temporary profile (user-data-dir) and removes it afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` on loopback with uvicorn in a thread; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations of ``impacts`` on the page (rule: targets)."""
    page.add_script_tag(content=AXE.read_text("utf-8"))
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact,
            targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return [f"{v['id']} ({v['impact']}): {v['targets']}" for v in result
            if v["impact"] in impacts]


def screenshot(page: Any, name: str, *, docs: bool = False) -> Path:
    """Save a full-page screenshot as a test artefact (and in docs/screenshots when
    ``docs`` and HEALTHMESH_UPDATE_SCREENSHOTS=1)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("HEALTHMESH_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
    return path


def sign_in_page(page: Any, base: str, username: str, password: str,
                 start: str = "/web/") -> None:
    """Sign in through the node's sign-in form, as a person does."""
    page.goto(f"{base}{start}")
    if "/auth/authorize" not in page.url:
        page.get_by_role("link", name="Sign in").click()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in and allow").click()
    page.wait_for_url(f"{base}/web/**")
