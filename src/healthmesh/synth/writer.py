"""Streaming output: NDJSON per (site, resource type) or transaction Bundles, truth, manifest.

Resources are serialised with ``orjson`` as soon as a person is done and written through
buffered file handles kept open per (site, resource type), so memory stays flat however many
people are generated. With ``fmt="bundle"`` each site gets ``bundles/<site>-NNNNN.json``
transaction Bundles of PUT entries: bundle 00000 holds the site-level resources
(Organizations, Practitioners, Questionnaires), then one Bundle per ``per_bundle`` patients.

``truth/linkage.csv`` maps every Patient at every site to the true person and household; it
is the only place where the ground truth is written.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson

__all__ = ["TRUTH_HEADER", "Writer", "write_manifest"]

TRUTH_HEADER = "site,resource_type,resource_id,mrn,person_id,household_id,household_role\n"
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_BUFFER = 1 << 18


class Writer:
    """Writes one site's resources at a time; call :meth:`close` (or use ``with``)."""

    def __init__(self, out: Path, sites: list[str], fmt: str, per_bundle: int = 100) -> None:
        self.out, self.fmt, self.per_bundle = out, fmt, per_bundle
        self.counts: dict[str, dict[str, int]] = {s: {} for s in sites}
        self.patients = dict.fromkeys(sites, 0)
        self._files: dict[tuple[str, str], BinaryIO] = {}
        self._handles: dict[str, dict[str, Any]] = {s: {} for s in sites}
        self._entries: dict[str, list[bytes]] = {s: [] for s in sites}
        self._pending = dict.fromkeys(sites, 0)
        self._bundle_no = dict.fromkeys(sites, 0)
        for site in sites:
            (out / site / ("bundles" if fmt == "bundle" else "")).mkdir(parents=True,
                                                                      exist_ok=True)
        (out / "truth").mkdir(parents=True, exist_ok=True)
        self._truth = open(out / "truth" / "linkage.csv", "w", encoding="utf-8",  # noqa: SIM115
                           newline="", buffering=_BUFFER)
        self._truth.write(TRUTH_HEADER)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def site_resources(self, site: str, resources: list[dict[str, Any]]) -> None:
        """Organizations, Practitioners, Questionnaires: written before any patient."""
        self._write(site, resources)
        if self.fmt == "bundle":
            self._flush_bundle(site)

    def patient(self, site: str, resources: list[dict[str, Any]], truth: str) -> None:
        """One patient's resources at ``site`` (Patient first) and its truth row."""
        self._write(site, resources)
        self._truth.write(truth)
        self.patients[site] += 1
        if self.fmt == "bundle":
            self._pending[site] += 1
            if self._pending[site] >= self.per_bundle:
                self._flush_bundle(site)

    def _write(self, site: str, resources: list[dict[str, Any]]) -> None:
        counts = self.counts[site]
        if self.fmt == "bundle":
            entries = self._entries[site]
            for r in resources:
                rt = r["resourceType"]
                counts[rt] = counts.get(rt, 0) + 1
                entries.append(b'{"resource":' + orjson.dumps(r) + b',"request":{"method":"PUT",'
                               b'"url":"' + f"{rt}/{r['id']}".encode() + b'"}}')
            return
        files, dumps = self._handles[site], orjson.dumps
        for r in resources:
            rt = r["resourceType"]
            write = files.get(rt)
            if write is None:
                write = files[rt] = self._open(site, rt)
                counts[rt] = 0
            write(dumps(r, option=_NEWLINE))
            counts[rt] += 1

    def _open(self, site: str, rt: str) -> Any:
        handle = open(self.out / site / f"{rt}.ndjson", "wb", buffering=_BUFFER)  # noqa: SIM115
        self._files[(site, rt)] = handle
        return handle.write

    def _flush_bundle(self, site: str) -> None:
        entries = self._entries[site]
        if not entries:
            return
        number = self._bundle_no[site]
        name = f"{site}-{number:05d}"
        body = (b'{"resourceType":"Bundle","id":"' + name.encode()
                + b'","type":"transaction","entry":[' + b",".join(entries) + b"]}\n")
        (self.out / site / "bundles" / f"{name}.json").write_bytes(body)
        self._bundle_no[site] = number + 1
        self._pending[site] = 0
        entries.clear()

    def files(self, site: str) -> list[str]:
        """The files written for ``site``, relative to the output directory."""
        if self.fmt == "bundle":
            return [f"{site}/bundles/{site}-{n:05d}.json" for n in range(self._bundle_no[site])]
        return sorted(f"{site}/{rt}.ndjson" for s, rt in self._files if s == site)

    def close(self) -> None:
        """Flush pending bundles and close every file."""
        if self.fmt == "bundle":
            for site in self._entries:
                self._flush_bundle(site)
        for handle in self._files.values():
            handle.close()
        self._truth.close()


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """``manifest.json``: sorted keys, indented, byte-stable."""
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | _NEWLINE)
    (out / "manifest.json").write_bytes(data)
