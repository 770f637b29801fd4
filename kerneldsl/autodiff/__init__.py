"""Reverse-mode autodiff on the tensor IR: `kd.grad` and the finite-difference checker `kd.check_grad`."""

from .checker import GradCheck, check_grad
from .grad import grad

__all__ = ["GradCheck", "check_grad", "grad"]
