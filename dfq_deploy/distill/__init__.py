"""Knowledge-distillation losses."""

from .losses import kd_loss

__all__ = ["kd_loss"]
