"""Float models: the zoo, the shipped teacher and its pretraining."""

from .zoo import (SHIPPED_TEACHER, ForwardCost, ModelCard, build_model, forward_cost, gmac_per_image, load_teacher,
                  load_weights, read_state_dict)

__all__ = ["SHIPPED_TEACHER", "ForwardCost", "ModelCard", "build_model", "forward_cost", "gmac_per_image",
           "load_teacher", "load_weights", "read_state_dict"]
