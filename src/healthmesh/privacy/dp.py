"""Differential privacy for count vectors, through OpenDP's core measurements.

Every function here builds an OpenDP measurement over ``Vec<i64>`` and lets OpenDP draw
the noise (integer-valued discrete Laplace or discrete Gaussian noise from the operating
system's CSPRNG, which cannot be seeded) and certify the privacy loss: the noise scale is
calibrated so that the measurement's own ``map(sensitivity)`` is at most the loss asked
for, so what a node charges to its ledger is what OpenDP proves.

**Privacy unit and sensitivity.** The unit is one person, added to or removed from the
node's data. In a stratified count each person falls in exactly one cell (the strata are
disjoint), so adding or removing a person changes one cell by one: the whole vector moves
by 1 under the L1 metric and by 1 under the L2 metric, and ``sensitivity=1`` is right.
Pass a larger ``sensitivity`` where a person can contribute to several cells (e.g. counts
of encounters, or of patients per diagnosis when a patient has several diagnoses: the
bound is the most cells, or the most rows, one person can add), or ``sensitivity=2`` for
the replace-one-person ("bounded") unit.

**What the noise does not cover.** The set of cells must not depend on the data: if a
table lists only the strata that occur, the mere presence of a row tells that its count
is non-zero. Algorithms must emit every cell of a fixed domain (zeros included) before
noise is added.

``contrib`` is enabled once, when this module is imported; ``floating-point`` is not
needed because all inputs and all noise are integers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import opendp.prelude as dp
from opendp.accuracy import (
    discrete_gaussian_scale_to_accuracy,
    discrete_laplacian_scale_to_accuracy,
)
from opendp.mod import Measurement, OpenDPException

from healthmesh.privacy.errors import DisclosureError

dp.enable_features("contrib")

__all__ = [
    "gaussian_accuracy",
    "gaussian_counts",
    "gaussian_measurement",
    "gaussian_scale",
    "laplace_accuracy",
    "laplace_counts",
    "laplace_measurement",
    "laplace_scale",
    "rho_for_epsilon",
]

_I64 = (-(2**63), 2**63 - 1)


def laplace_scale(epsilon: float, sensitivity: int = 1) -> float:
    """The Laplace scale ``b = sensitivity / epsilon``, nudged up (by a few ulps at most)
    until OpenDP certifies a privacy loss of at most ``epsilon``."""
    _check_positive("epsilon", epsilon)
    _check_sensitivity(sensitivity)
    return _calibrate(laplace_measurement, sensitivity / epsilon, sensitivity, epsilon)


def laplace_measurement(scale: float) -> Measurement:
    """OpenDP's Laplace measurement over integer vectors under the L1 metric."""
    space = dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64)
    with _opendp():
        return dp.m.make_laplace(*space, scale=scale)


def laplace_counts(values: Sequence[int], epsilon: float, sensitivity: int = 1) -> list[int]:
    """``values`` plus discrete Laplace noise: ``epsilon``-DP when one person changes the
    vector by at most ``sensitivity`` in L1. The result may be negative; see
    :func:`healthmesh.privacy.apply_rules` for clamping."""
    scale = laplace_scale(epsilon, sensitivity)
    return _release(laplace_measurement(scale), values)


def laplace_accuracy(epsilon: float, sensitivity: int = 1, alpha: float = 0.05) -> float:
    """Half-width ``a`` with ``P(|noise| >= a) = alpha`` (95% for the default ``alpha``).

    Uses the *discrete* Laplace formula, because the noise is integer-valued; it is a
    little wider than the continuous one.
    """
    scale = laplace_scale(epsilon, sensitivity)
    with _opendp():
        return discrete_laplacian_scale_to_accuracy(scale, alpha)


def gaussian_scale(rho: float, sensitivity: int = 1) -> float:
    """The Gaussian standard deviation ``sensitivity / sqrt(2 rho)``, nudged up until
    OpenDP certifies ``rho``-zCDP."""
    _check_positive("rho", rho)
    _check_sensitivity(sensitivity)
    start = sensitivity / math.sqrt(2 * rho)
    return _calibrate(gaussian_measurement, start, sensitivity, rho)


def gaussian_measurement(scale: float) -> Measurement:
    """OpenDP's Gaussian measurement over integer vectors under the L2 metric (zCDP)."""
    space = dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l2_distance(T=dp.i64)
    with _opendp():
        return dp.m.make_gaussian(*space, scale=scale)


def gaussian_counts(values: Sequence[int], rho: float, sensitivity: int = 1) -> list[int]:
    """``values`` plus discrete Gaussian noise: ``rho``-zCDP when one person changes the
    vector by at most ``sensitivity`` in L2. Use :func:`rho_for_epsilon` to spend an
    ``(epsilon, delta)`` budget."""
    return _release(gaussian_measurement(gaussian_scale(rho, sensitivity)), values)


def gaussian_accuracy(rho: float, sensitivity: int = 1, alpha: float = 0.05) -> float:
    """Half-width ``a`` with ``P(|noise| >= a) = alpha`` for :func:`gaussian_counts`."""
    scale = gaussian_scale(rho, sensitivity)
    with _opendp():
        return discrete_gaussian_scale_to_accuracy(scale, alpha)


@functools.lru_cache(maxsize=64)
def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest ``rho`` whose zCDP guarantee implies ``(epsilon, delta)``-DP, found by
    OpenDP's binary search over the conversion it proves (``make_zCDP_to_approxDP``);
    cached, as the search takes a few tenths of a second."""
    _check_positive("epsilon", epsilon)
    if not 0 < delta < 1:
        raise DisclosureError(f"delta must be in (0, 1), got {delta!r}")

    def chain(scale: float) -> Measurement:
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gaussian_measurement(scale)), delta)

    with _opendp():
        scale = dp.binary_search_param(chain, d_in=1, d_out=(epsilon, delta), T=float)
        return float(gaussian_measurement(scale).map(1))


# -- internals ----------------------------------------------------------------------------


def _calibrate(
    build: Callable[[float], Measurement], scale: float, d_in: int, d_out: float
) -> float:
    """The smallest float at or above ``scale`` whose measurement passes ``check``."""
    for _ in range(64):
        with _opendp():
            if build(scale).check(d_in, d_out):
                return scale
        scale = math.nextafter(scale, math.inf)
    raise DisclosureError(f"cannot calibrate noise for a privacy loss of {d_out!r}")


def _release(measurement: Measurement, values: Sequence[int]) -> list[int]:
    data = [_as_i64(v) for v in values]
    if not data:
        return []
    with _opendp():
        return [int(v) for v in measurement(data)]


def _as_i64(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DisclosureError(f"DP noise needs integer counts, got {value!r}")
    if not _I64[0] <= value <= _I64[1]:
        raise DisclosureError(f"count {value} does not fit a 64-bit integer")
    return value


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise DisclosureError(f"{name} must be a positive finite number, got {value!r}")


def _check_sensitivity(sensitivity: int) -> None:
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise DisclosureError(f"sensitivity must be a positive integer, got {sensitivity!r}")


@contextmanager
def _opendp() -> Iterator[None]:
    """Translate OpenDP's errors into :class:`DisclosureError`."""
    try:
        yield
    except OpenDPException as exc:
        raise DisclosureError(f"OpenDP refused: {exc}") from None
