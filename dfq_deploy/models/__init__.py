"""Float models: the zoo, the shipped teacher and its pretraining."""

from .zoo import (SHIPPED_TEACHER, ModelCard, build_model, gmac_per_image, load_teacher, load_weights, read_state_dict,
                  work_per_image)

__all__ = ["SHIPPED_TEACHER", "ModelCard", "build_model", "gmac_per_image", "load_teacher", "load_weights",
           "read_state_dict", "work_per_image"]
