import pytest
import sciml_protocols as sp
import torch


def spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    return m @ m.T + n * torch.eye(n, dtype=torch.float64)


def test_protocol_membership_and_kinds():
    root = sp.root_condition(lambda z, t: z - t)
    fixed = sp.fixed_point_condition(lambda z, t: 0.5 * z + t)
    assert isinstance(root, sp.OptimalityCondition)
    assert isinstance(fixed, sp.OptimalityCondition)
    assert root.kind == "root"
    assert fixed.kind == "fixed_point"


def test_fixed_point_residual_is_map_minus_identity():
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cond = sp.FixedPointCondition(lambda z, t: torch.tanh(z) + t)
    z = torch.tensor([0.3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(cond.residual(z, theta), torch.tanh(z) + theta - z)
    # Iterating a contraction converges to a point the condition accepts.
    contraction = sp.FixedPointCondition(lambda z, t: 0.5 * torch.cos(z) + t)
    for _ in range(80):
        z = contraction.map(z, theta)
    assert contraction.is_satisfied(z, theta, tol=1e-12)
    assert not contraction.is_satisfied(z + 0.1, theta, tol=1e-6)


def test_stationarity_condition_and_implicit_gradient_through_cg():
    # f(z, theta) = 0.5 z^T A z - theta^T z  =>  z* = A^{-1} theta and dz*/dtheta = A^{-1}.
    a = spd(5)
    cond = sp.stationarity_condition(lambda z, t: 0.5 * z @ a @ z - t @ z)
    theta = torch.randn(5, dtype=torch.float64)
    z_star = torch.linalg.solve(a, theta)
    assert cond.is_satisfied(z_star, theta, tol=1e-12)
    assert not cond.is_satisfied(torch.zeros(5, dtype=torch.float64), theta)

    # Implicit function theorem using only the condition: solve (dF/dz)^T u = v with CG on a matrix-free JVP,
    # then dL/dtheta = -(dF/dtheta)^T u.
    v = torch.randn(5, dtype=torch.float64)  # an upstream gradient dL/dz*
    z = z_star.clone().requires_grad_(True)
    t = theta.clone().requires_grad_(True)
    residual = cond.residual(z, t)

    def vjp_z(u):
        (g,) = torch.autograd.grad(residual, z, u, retain_graph=True)
        return g

    op = sp.FunctionOperator(vjp_z, (5, 5), dtype=torch.float64, device=torch.device("cpu"), symmetric=True)
    u = sp.cg(op, v, rtol=1e-12).value
    (grad_theta,) = torch.autograd.grad(residual, t, -u)
    torch.testing.assert_close(grad_theta, torch.linalg.solve(a, v))


def test_root_condition_derivative_matches_closed_form():
    # z* = sqrt(theta) from F = z^2 - theta: dz*/dtheta = 1 / (2 sqrt(theta)).
    cond = sp.root_condition(lambda z, t: z**2 - t)
    theta = torch.tensor([4.0, 9.0], dtype=torch.float64, requires_grad=True)
    z = torch.sqrt(theta.detach()).requires_grad_(True)
    residual = cond.residual(z, theta)
    (dfdz,) = torch.autograd.grad(residual.sum(), z, retain_graph=True)
    (dfdt,) = torch.autograd.grad(residual.sum(), theta)
    torch.testing.assert_close(-dfdt / dfdz, 1 / (2 * torch.sqrt(theta.detach())))


def test_bad_input():
    with pytest.raises(sp.SciMLInputError, match="'fn': must be callable"):
        sp.RootCondition(3)  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError, match="'fn': must be callable"):
        sp.fixed_point_condition("x")  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError, match="'objective'"):
        sp.stationarity_condition(None)  # type: ignore[arg-type]
    cond = sp.root_condition(lambda z, t: torch.zeros(3))
    with pytest.raises(sp.SciMLInputError, match="'fn': must return the shape of z"):
        cond.residual(torch.zeros(2), torch.zeros(2))
    with pytest.raises(sp.SciMLInputError, match="'fn': must return a tensor"):
        sp.root_condition(lambda z: 1.0).residual(torch.zeros(2))
    with pytest.raises(sp.SciMLInputError, match="'z'"):
        cond.residual([0.0])  # type: ignore[arg-type]
    with pytest.raises(sp.SciMLInputError, match="scalar"):
        sp.stationarity_condition(lambda z: z * 2).residual(torch.zeros(2))
    with pytest.raises(sp.SciMLInputError, match="'tol'"):
        sp.root_condition(lambda z: z).is_satisfied(torch.zeros(2), tol=-1.0)
