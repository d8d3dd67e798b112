"""ode_solvers.py - explicit integrators for y' = f(t, y) with fixed and adaptive step sizes.

Implements forward Euler, classical fourth-order Runge-Kutta and the Dormand-Prince 5(4) embedded
pair with step-size control (the method behind MATLAB's ode45 and SciPy's RK45). State vectors are
plain lists of floats so the module has no dependencies.

The __main__ block measures the empirical order of each fixed-step method on y' = -2ty (exact
solution exp(-t^2)) and integrates a Lotka-Volterra predator-prey system adaptively, checking that
its conserved quantity drifts by less than the tolerance.

    python3 ode_solvers.py
"""

from __future__ import annotations

import math
from typing import Callable, List, Sequence, Tuple

State = List[float]
RHS = Callable[[float, Sequence[float]], State]


def _axpy(y: Sequence[float], h: float, k: Sequence[float]) -> State:
    return [yi + h * ki for yi, ki in zip(y, k)]


def euler_step(f: RHS, t: float, y: Sequence[float], h: float) -> State:
    return _axpy(y, h, f(t, y))


def rk4_step(f: RHS, t: float, y: Sequence[float], h: float) -> State:
    k1 = f(t, y)
    k2 = f(t + h / 2, _axpy(y, h / 2, k1))
    k3 = f(t + h / 2, _axpy(y, h / 2, k2))
    k4 = f(t + h, _axpy(y, h, k3))
    return [yi + h / 6 * (a + 2 * b + 2 * c + d) for yi, a, b, c, d in zip(y, k1, k2, k3, k4)]


def integrate_fixed(step, f: RHS, t0: float, y0: Sequence[float], t1: float, n_steps: int) -> State:
    """Advances from t0 to t1 in n_steps equal steps of the given single-step method."""
    if n_steps <= 0:
        raise ValueError("n_steps must be positive")
    h = (t1 - t0) / n_steps
    y = list(y0)
    t = t0
    for _ in range(n_steps):
        y = step(f, t, y, h)
        t += h
    return y


# Dormand-Prince coefficients (Butcher tableau). B5 gives the 5th-order solution that is propagated;
# B4 the embedded 4th-order one used only for the error estimate.
C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def dopri_step(f: RHS, t: float, y: Sequence[float], h: float) -> Tuple[State, State]:
    """One Dormand-Prince step: returns (5th-order solution, 5th minus 4th-order difference)."""
    ks: List[State] = []
    for stage in range(7):
        yi = list(y)
        for j, a in enumerate(A[stage]):
            if a:
                yi = _axpy(yi, h * a, ks[j])
        ks.append(f(t + C[stage] * h, yi))
    y5 = list(y)
    y4 = list(y)
    for j in range(7):
        if B5[j]:
            y5 = _axpy(y5, h * B5[j], ks[j])
        if B4[j]:
            y4 = _axpy(y4, h * B4[j], ks[j])
    return y5, [a - b for a, b in zip(y5, y4)]


class StepStats:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.evaluations = 0

    def __repr__(self) -> str:
        return f"StepStats(accepted={self.accepted}, rejected={self.rejected}, evaluations={self.evaluations})"


def integrate_adaptive(
    f: RHS,
    t0: float,
    y0: Sequence[float],
    t1: float,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    h0: float | None = None,
    max_steps: int = 100_000,
) -> Tuple[List[float], List[State], StepStats]:
    """Dormand-Prince with a standard controller; returns (times, states, stats)."""
    stats = StepStats()

    def f_counted(t: float, y: Sequence[float]) -> State:
        stats.evaluations += 1
        return f(t, y)

    direction = 1.0 if t1 >= t0 else -1.0
    h = h0 if h0 is not None else direction * abs(t1 - t0) / 100
    t = t0
    y = list(y0)
    times = [t]
    states = [list(y)]
    safety, min_factor, max_factor = 0.9, 0.2, 5.0
    while direction * (t1 - t) > 1e-15 * max(1.0, abs(t1)):
        if stats.accepted + stats.rejected >= max_steps:
            raise RuntimeError(f"too many steps ({max_steps}); the problem may be stiff")
        if direction * (t + h - t1) > 0:
            h = t1 - t  # do not step past the end
        y_new, err = dopri_step(f_counted, t, y, h)
        scale = [atol + rtol * max(abs(a), abs(b)) for a, b in zip(y, y_new)]
        err_norm = math.sqrt(sum((e / s) ** 2 for e, s in zip(err, scale)) / len(err))
        if err_norm <= 1.0:
            t += h
            y = y_new
            times.append(t)
            states.append(list(y))
            stats.accepted += 1
        else:
            stats.rejected += 1
        # The error of a 4th-order estimate scales like h^5.
        factor = max_factor if err_norm == 0 else safety * err_norm ** (-1 / 5)
        h *= min(max_factor, max(min_factor, factor))
    return times, states, stats


def empirical_order(step, f: RHS, exact: float, t1: float) -> float:
    """Order estimated from the errors at n and 2n steps: log2(err(n) / err(2n))."""
    errors = []
    for n in (20, 40):
        y = integrate_fixed(step, f, 0.0, [1.0], t1, n)[0]
        errors.append(abs(y - exact))
    return math.log2(errors[0] / errors[1])


def lotka_volterra(alpha=1.1, beta=0.4, delta=0.1, gamma=0.4) -> Tuple[RHS, Callable[[Sequence[float]], float]]:
    """Predator-prey right-hand side and its conserved quantity V(x, y)."""

    def rhs(t: float, s: Sequence[float]) -> State:
        x, y = s
        return [alpha * x - beta * x * y, delta * x * y - gamma * y]

    def invariant(s: Sequence[float]) -> float:
        x, y = s
        return delta * x - gamma * math.log(x) + beta * y - alpha * math.log(y)

    return rhs, invariant


def main() -> int:
    decay: RHS = lambda t, y: [-2.0 * t * y[0]]
    exact = math.exp(-1.0)
    ok = True
    for name, step, expected in (("euler", euler_step, 1), ("rk4", rk4_step, 4)):
        order = empirical_order(step, decay, exact, 1.0)
        print(f"{name:6s} empirical order {order:.2f} (expected {expected})")
        ok &= abs(order - expected) < 0.3

    rhs, invariant = lotka_volterra()
    y0 = [10.0, 10.0]
    times, states, stats = integrate_adaptive(rhs, 0.0, y0, 50.0, rtol=1e-8, atol=1e-10)
    drift = max(abs(invariant(s) - invariant(y0)) for s in states)
    print(f"lotka-volterra: {len(times)} points, {stats}, max invariant drift {drift:.2e}")
    ok &= drift < 1e-5
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
