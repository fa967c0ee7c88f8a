"""Knowledge distillation: KD losses and balancers that weight several teachers' losses."""

from .balancers import DMKDBalancer, FixedBalancer, teacher_features
from .losses import entropy_terms, kd_loss

__all__ = ["entropy_terms", "kd_loss", "DMKDBalancer", "FixedBalancer", "teacher_features"]
