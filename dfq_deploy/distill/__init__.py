"""Knowledge distillation: KD losses and balancers that weight several teachers' losses."""

from .balancers import DMKDBalancer, FixedBalancer, teacher_features
from .losses import kd_loss

__all__ = ["kd_loss", "DMKDBalancer", "FixedBalancer", "teacher_features"]
