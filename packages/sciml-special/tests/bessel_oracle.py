"""High-precision oracles for the log-Bessel tests (mpmath at 40 digits), cached per process.

Two independent routes, both evaluated at 40 significant digits:

* ``mpmath.besseli`` / ``mpmath.besselk`` with ``maxterms=10**6``, under a wall-clock budget (they take seconds or
  fail with NoConvergence / a precision error at large order and argument);
* positive-integrand quadratures in log space, used when mpmath's functions exceed the budget or fail:
  :math:`I_v(x) = \\frac{(x/2)^v}{\\sqrt\\pi\\,\\Gamma(v+\\frac12)} \\int_0^\\pi e^{x\\cos\\theta} \\sin^{2v}\\theta\\,
  d\\theta` (DLMF 10.32.2) and :math:`K_v(x) = \\int_0^\\infty e^{-x\\cosh t}\\cosh(vt)\\,dt` (DLMF 10.32.9), each
  shifted by the log of its integrand's maximum and split around the maximiser for ``mpmath.quad``.

Derivatives in the order come from the same quadratures (:math:`\\partial_v` under the integral sign) or from
``mpmath.diff`` of ``log besseli``.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import mpmath

DPS = 40
BUDGET_S = 0.3


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _try(fn: Callable[[], Any], seconds: float = BUDGET_S) -> Any:
    try:
        with _budget(seconds):
            return fn()
    except (_Timeout, mpmath.libmp.NoConvergence, ValueError, ZeroDivisionError):
        return None


def _breakpoints(center: Any, width: Any, low: Any, high: Any) -> list[Any]:
    points = {low, high}
    for k in (1, 4, 12, 40):
        for sign in (-1, 1):
            p = center + sign * k * width
            if low < p < high:
                points.add(p)
    if low < center < high:
        points.add(center)
    return sorted(points)


# ---------------------------------------------------------------------------------------------------- I


def _log_i_quad_parts(v: Any, x: Any) -> tuple[Any, Any, list[Any], Callable[[Any], Any]]:
    c = x / (mpmath.sqrt(v * v + x * x) + v)  # cos(theta*) at the maximiser of x cos + 2v log sin
    theta = mpmath.acos(c)

    def log_f(t: Any) -> Any:
        s = mpmath.sin(t)
        if s <= 0:
            return mpmath.ninf if v > 0 else x * mpmath.cos(t)
        return x * mpmath.cos(t) + 2 * v * mpmath.log(s)

    peak = log_f(theta) if theta > 0 else x
    curvature = x * c + (2 * v / (1 - c * c) if c < 1 else mpmath.mpf(0))
    width = 1 / mpmath.sqrt(curvature) if curvature > 0 else mpmath.mpf(1)
    pts = _breakpoints(theta, min(width, mpmath.pi / 4), mpmath.mpf(0), mpmath.pi)
    return peak, theta, pts, log_f


def _log_i_quad(v: Any, x: Any) -> Any:
    peak, _, pts, log_f = _log_i_quad_parts(v, x)
    integral = mpmath.quad(lambda t: mpmath.exp(log_f(t) - peak), pts, maxdegree=10)
    return (
        v * mpmath.log(x / 2)
        - mpmath.log(mpmath.pi) / 2
        - mpmath.loggamma(v + mpmath.mpf(1) / 2)
        + peak
        + mpmath.log(integral)
    )


def _log_iv(vm: Any, xm: Any) -> Any:
    if xm == 0:
        return mpmath.mpf(0) if vm == 0 else mpmath.ninf
    # mpmath needs seconds when order and argument are both large; the quadrature does not
    value = _try(lambda: mpmath.besseli(vm, xm, maxterms=10**6)) if min(vm, xm) < 2000 else None
    if value is not None and mpmath.isfinite(value) and value > 0:
        return mpmath.log(value)
    return _log_i_quad(vm, xm)


@functools.cache
def log_iv_mp(v: float, x: float) -> Any:
    """``log I_v(x)`` as an mpf at 40 digits (``-inf`` at ``x = 0 < v``, ``0`` at ``x = v = 0``)."""
    with mpmath.workdps(DPS):
        return _log_iv(mpmath.mpf(v), mpmath.mpf(x))


@functools.cache
def log_iv_quad(v: float, x: float) -> Any:
    """``log I_v(x)`` from the quadrature only (to cross-check the two routes)."""
    with mpmath.workdps(DPS):
        return _log_i_quad(mpmath.mpf(v), mpmath.mpf(x))


def log_iv(v: float, x: float) -> float:
    return float(log_iv_mp(float(v), float(x)))


@functools.cache
def iv_ratio(v: float, x: float) -> float:
    """``I_{v+1}(x) / I_v(x)`` from the 40-digit logs (with ``v + 1`` exact, not rounded to float64)."""
    if x == 0:
        return 0.0
    with mpmath.workdps(DPS):
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        return float(mpmath.exp(_log_iv(vm + 1, xm) - log_iv_mp(float(v), float(x))))


@functools.cache
def dlog_iv_dv(v: float, x: float) -> float:
    r""":math:`\partial_v \log I_v(x)`: differentiate the quadrature representation under the integral sign."""
    with mpmath.workdps(DPS):
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        peak, _, pts, log_f = _log_i_quad_parts(vm, xm)
        den = mpmath.quad(lambda t: mpmath.exp(log_f(t) - peak), pts, maxdegree=10)
        num = mpmath.quad(
            lambda t: 2 * mpmath.log(mpmath.sin(t)) * mpmath.exp(log_f(t) - peak) if mpmath.sin(t) > 0 else 0,
            pts,
            maxdegree=10,
        )
        return float(mpmath.log(xm / 2) - mpmath.digamma(vm + mpmath.mpf(1) / 2) + num / den)


@functools.cache
def dlog_iv_dv_diff(v: float, x: float) -> float | None:
    """:math:`\\partial_v \\log I_v(x)` by ``mpmath.diff`` of ``log besseli`` (None when mpmath is too slow)."""
    with mpmath.workdps(DPS):
        xm = mpmath.mpf(x)
        value = _try(
            lambda: mpmath.diff(lambda w: mpmath.log(mpmath.besseli(w, xm, maxterms=10**6)), mpmath.mpf(v)),
            4 * BUDGET_S,
        )
        return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------------- K


def _k_parts(v: Any, x: Any) -> tuple[Any, list[Any], Callable[[Any], Any]]:
    def log_g(t: Any) -> Any:
        vt = v * t
        return -x * mpmath.cosh(t) + vt + mpmath.log1p(mpmath.exp(-2 * vt)) - mpmath.log(2)

    if v * v <= x:
        t_star = mpmath.mpf(0)
    else:
        # Newton from the right of the root of the convex x sinh t - v tanh(vt): monotone convergence
        t_star = mpmath.asinh(v / x)
        for _ in range(200):
            step = (x * mpmath.sinh(t_star) - v * mpmath.tanh(v * t_star)) / (
                x * mpmath.cosh(t_star) - v * v / mpmath.cosh(v * t_star) ** 2
            )
            t_star -= step
            if abs(step) <= mpmath.mpf(10) ** (-DPS + 5) * (1 + t_star):
                break
    peak = log_g(t_star)
    curvature = abs(x * mpmath.cosh(t_star) - v * v / mpmath.cosh(v * t_star) ** 2)
    width = 1 / mpmath.sqrt(curvature) if curvature > 0 else mpmath.mpf(1)
    width = min(width, mpmath.mpf(4))
    right = mpmath.acosh(1 + (mpmath.mpf(200) + abs(peak) + v * (t_star + 50)) / x)
    pts = _breakpoints(t_star, width, mpmath.mpf(0), max(right, t_star + 50 * width))
    plateau = mpmath.log(2 / x)
    for p in (plateau - 5, plateau, plateau + 2):
        if 0 < p < pts[-1] and all(abs(p - q) > 1e-3 for q in pts):
            pts.append(p)
    return peak, sorted(pts), log_g


def _log_k_quad(v: Any, x: Any) -> Any:
    peak, pts, log_g = _k_parts(v, x)
    return peak + mpmath.log(mpmath.quad(lambda t: mpmath.exp(log_g(t) - peak), pts, maxdegree=10))


@functools.cache
def log_kv_mp(v: float, x: float) -> Any:
    """``log K_v(x)`` as an mpf at 40 digits (``+inf`` at ``x = 0``).

    ``mpmath.besselk`` (without ``maxterms``, which makes it crawl) for ``v <= 30, x <= 100`` when it answers
    within 0.1 s, else the quadrature (0.05-0.2 s); the two agree to 1e-35 there (see the test of the oracle).
    Beyond that range mpmath 1.3 can be silently wrong even at 40 digits: ``besselk(873.99, 865.53)`` returns
    ``exp(453.28)`` where the true value is ``exp(-457.03)``.
    """
    with mpmath.workdps(DPS):
        if x == 0:
            return mpmath.inf
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        value = _try(lambda: mpmath.besselk(vm, xm), 0.1) if v <= 30 and x <= 100 else None
        if value is not None and mpmath.isfinite(value) and value > 0:
            return mpmath.log(value)
        return _log_k_quad(vm, xm)


@functools.cache
def log_kv_besselk(v: float, x: float) -> Any:
    """``log K_v(x)`` from ``mpmath.besselk`` (None beyond the time budget or on failure)."""
    with mpmath.workdps(DPS):
        value = _try(lambda: mpmath.besselk(mpmath.mpf(v), mpmath.mpf(x)), 4 * BUDGET_S)
        if value is None or not mpmath.isfinite(value) or value <= 0:
            return None
        return mpmath.log(value)


def log_kv(v: float, x: float) -> float:
    return float(log_kv_mp(float(v), float(x)))


@functools.cache
def dlog_kv_dv(v: float, x: float) -> float:
    r""":math:`\partial_v \log K_v(x) = \int t\sinh(vt)e^{-x\cosh t}dt / K_v(x)`, by quadrature."""
    with mpmath.workdps(DPS):
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        peak, pts, log_g = _k_parts(vm, xm)
        den = mpmath.quad(lambda t: mpmath.exp(log_g(t) - peak), pts, maxdegree=10)
        num = mpmath.quad(lambda t: t * mpmath.tanh(vm * t) * mpmath.exp(log_g(t) - peak), pts, maxdegree=10)
        return float(num / den)


# ---------------------------------------------------------------------------------------------------- batches


def _base(job: tuple[float, float]) -> tuple[Any, Any, Any]:
    """``(log I_v, log I_{v+1}, log K_v)`` at one point, as 40-digit mpf (``v + 1`` exact)."""
    v, x = job
    with mpmath.workdps(DPS):
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        return log_iv_mp(v, x), _log_iv(vm + 1, xm), log_kv_mp(v, x)


_bases: dict[tuple[float, float], tuple[Any, Any, Any]] = {}


def _derive(name: str, v: float, x: float) -> float:
    log_i, log_i1, log_k = _bases[(v, x)]
    with mpmath.workdps(DPS):
        xm = mpmath.mpf(x)
        if name == "log_iv":
            return float(log_i)
        if name == "log_kv":
            return float(log_k)
        if name == "iv_ratio":
            return 0.0 if x == 0 else float(mpmath.exp(log_i1 - log_i))
        if name == "log_ive":
            return float(log_i - xm)
        if name == "log_kve":
            return float(log_k + xm)
    raise KeyError(name)


def evaluate(name: str, points: list[tuple[float, float]], processes: int = 2) -> list[float]:
    """Oracle values of ``name`` (``log_iv``, ``log_kv``, ``iv_ratio``, ``log_ive``, ``log_kve``) at ``points``.

    The 40-digit logs are computed once per point, in ``processes`` forked workers, and cached for the session.
    Forking is safe here (the workers only run mpmath) and keeps the module, registered in ``sys.modules`` under
    whatever name the tests gave it, visible to the workers.
    """
    import multiprocessing
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    keys = [(float(v), float(x)) for v, x in points]
    missing = sorted(set(keys) - set(_bases))
    if len(missing) > 8 and processes > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads alive (Python >= 3.12)
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
                values = list(pool.map(_base, missing, chunksize=2))
    else:
        values = [_base(job) for job in missing]
    _bases.update(zip(missing, values, strict=True))
    return [_derive(name, v, x) for v, x in keys]


def kv_ratio(v: float, x: float) -> float:
    """``K_{v+1}(x) / K_v(x)`` at 40 digits (``v + 1`` exact)."""
    with mpmath.workdps(DPS):
        vm, xm = mpmath.mpf(v), mpmath.mpf(x)
        upper = mpmath.log(mpmath.besselk(vm + 1, xm)) if v <= 29 and x <= 100 else _log_k_quad(vm + 1, xm)
        return float(mpmath.exp(upper - log_kv_mp(float(v), float(x))))
