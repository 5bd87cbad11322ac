"""Straight-through estimators with a rectangle kernel (Rajamanoharan et al., "Jumping Ahead").

JumpReLU ``z * H(z - θ)`` and the Heaviside step ``H(z - θ)`` have zero gradient with respect to
the threshold θ almost everywhere. The paper replaces it by kernel density estimates with the
rectangle kernel ``K(u) = 1[-1/2 < u < 1/2]`` and bandwidth ε:

    ∂/∂θ JumpReLU_θ(z) := -(θ/ε) K((z - θ)/ε)
    ∂/∂θ H(z - θ)      := -(1/ε) K((z - θ)/ε)

while ∂/∂z JumpReLU_θ(z) = H(z - θ) as usual and the Heaviside passes no gradient to z.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel on (-1/2, 1/2)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > theta).to(grad.dtype)
        grad_theta = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return grad_z, grad_theta.sum_to_size(theta.shape), None


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * rectangle((z - theta) / eps) * grad
        return None, grad_theta.sum_to_size(theta.shape), None


def jumprelu(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """``z * H(z - θ)`` with the paper's pseudo-derivative for θ."""
    return _JumpReLU.apply(z, theta, bandwidth)


def heaviside(z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """``H(z - θ)`` with the paper's pseudo-derivative for θ and none for z."""
    return _Heaviside.apply(z, theta, bandwidth)
