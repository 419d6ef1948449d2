"""sciml-bilevel's implicit differentiation applied to solvers of other sciml packages, through the protocols only.

Neither sciml-special nor sciml-optim knows about sciml-bilevel: each solver is wrapped here with the optimality
condition its result satisfies, and the implicit derivative is checked against central finite differences of the
solver itself.
"""

import math

import pytest
import torch
from sciml_bilevel import custom_fixed_point, custom_root
from sciml_protocols import FixedPointCondition, RootCondition

DTYPE = torch.float64


def test_vmf_concentration_mle_differentiated_through_its_ratio_equation():
    # kappa_hat(r) solves A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = r: the vMF maximum-likelihood equation.
    from sciml_special import iv_ratio, vmf_kappa_mle

    dim = 64
    order = torch.tensor(dim / 2 - 1, dtype=DTYPE)
    condition = RootCondition(lambda kappa, r: iv_ratio(order, kappa) - r)

    @custom_root(condition)
    def mle(init, r):
        del init
        return vmf_kappa_mle(dim, r).value.reshape(r.shape)

    r = torch.tensor(0.7, dtype=DTYPE, requires_grad=True)
    kappa = mle(torch.tensor(1.0, dtype=DTYPE), r)
    (derivative,) = torch.autograd.grad(kappa, r)
    h = 1e-6
    numeric = (vmf_kappa_mle(dim, torch.tensor(0.7 + h, dtype=DTYPE)).value
               - vmf_kappa_mle(dim, torch.tensor(0.7 - h, dtype=DTYPE)).value) / (2 * h)  # fmt: skip
    assert float(derivative) == pytest.approx(float(numeric), rel=1e-6)
    # and the closed form of the inverse-function rule: dkappa/dr = 1 / A_d'(kappa)
    k = kappa.detach().requires_grad_()
    (slope,) = torch.autograd.grad(iv_ratio(order, k), k)
    assert float(derivative) == pytest.approx(1.0 / float(slope), rel=1e-10)


def test_halpern_fixed_point_differentiated_through_its_map():
    # u* = T(u*, theta) with T(u, theta) = M u + theta, ||M|| < 1, found by sciml-optim's Halpern iteration.
    from sciml_optim import halpern

    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=DTYPE))
    m = 0.6 * q  # a scaled rotation: a contraction, so T is nonexpansive
    condition = FixedPointCondition(lambda u, theta: m @ u + theta)

    @custom_fixed_point(condition)
    def fixed_point(init, theta):
        return halpern(lambda u: m @ u + theta, init, max_iter=20_000, tol=1e-13).value

    theta = torch.randn(4, generator=generator, dtype=DTYPE, requires_grad=True)
    weights = torch.randn(4, generator=generator, dtype=DTYPE)
    u = fixed_point(torch.zeros(4, dtype=DTYPE), theta)
    (grad,) = torch.autograd.grad(weights @ u, theta)
    exact = torch.linalg.solve(torch.eye(4, dtype=DTYPE) - m, torch.eye(4, dtype=DTYPE))
    assert torch.allclose(grad, exact.T @ weights, rtol=1e-8, atol=1e-10)
    # finite differences of the Halpern solver itself; its last iterate is within O(1/k) of u*, so the difference
    # quotient matches to about 1e-3 after 20,000 iterations

    def solve_at(shift):
        return halpern(lambda v: m @ v + theta.detach() + shift, torch.zeros(4, dtype=DTYPE), max_iter=20_000).value

    h = 1e-2
    numeric = torch.stack([weights @ (solve_at(h * e) - solve_at(-h * e)) / (2 * h) for e in torch.eye(4, dtype=DTYPE)])
    assert torch.allclose(grad, numeric, rtol=2e-3, atol=1e-6)


def test_constrained_newton_solution_differentiated_through_kkt():
    # x*(c) = argmin 1/2 x^T Q x + c^T x  s.t.  A x = b, solved by sciml-optim's AdaSketch-Newton; dx*/dc from the
    # KKT conditions by sciml-bilevel, against the inverse of the KKT matrix.
    from sciml_bilevel import kkt_optimality
    from sciml_optim import adasketch_newton

    generator = torch.Generator().manual_seed(1)
    n, p = 5, 2
    root = torch.randn(n, n, generator=generator, dtype=DTYPE)
    q = root @ root.T + n * torch.eye(n, dtype=DTYPE)
    a = torch.randn(p, n, generator=generator, dtype=DTYPE)
    b = torch.randn(p, generator=generator, dtype=DTYPE)

    def objective(x, c):
        return 0.5 * x @ q @ x + c @ x

    def constraints(x):
        return a @ x - b

    # the KKT residual on the stacked unknown (x, nu)
    condition = kkt_optimality(objective, eq_constraints=constraints).flatten(n, n_eq=p)

    @custom_root(condition)
    def solve(init, c):
        del init
        result = adasketch_newton(lambda x: objective(x, c), constraints, torch.zeros(n, dtype=DTYPE),
                                  tol=1e-12, generator=torch.Generator().manual_seed(0))  # fmt: skip
        x, lam = result.value
        return torch.cat([x, lam])

    c = torch.randn(n, generator=generator, dtype=DTYPE, requires_grad=True)
    stacked = solve(torch.zeros(n + p, dtype=DTYPE), c)
    x, nu = stacked[:n], stacked[n:]
    weights = torch.randn(n, generator=generator, dtype=DTYPE)
    (grad,) = torch.autograd.grad(weights @ x, c)
    kkt = torch.zeros(n + p, n + p, dtype=DTYPE)
    kkt[:n, :n] = q
    kkt[:n, n:] = a.T
    kkt[n:, :n] = a
    # d x*/d c = -[KKT^{-1}]_{xx}: the gradient of w^T x* is -[KKT^{-1}]_{xx}^T w
    inverse = torch.linalg.inv(kkt)[:n, :n]
    assert torch.allclose(grad, -(inverse.T @ weights), rtol=1e-7, atol=1e-9)
    assert math.isfinite(float(nu.detach().sum()))
