"""Kept for the recipes' imports: the fused activation fake-quantization lives in :mod:`.fastpath`."""

from .fastpath import FusedActivationQuant, is_act_quant

__all__ = ["FusedActivationQuant", "is_act_quant"]
