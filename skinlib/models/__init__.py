"""Models: a registry and one factory, :func:`create_model`."""

from skinlib.models import zoo as _zoo  # noqa: F401  (registers the models)
from skinlib.models.registry import check_image_size, check_model_kwargs, create_model, list_models, register_model

__all__ = ["check_image_size", "check_model_kwargs", "create_model", "list_models", "register_model"]
