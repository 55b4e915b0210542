"""Building a pydantic model from values that are already valid, for code that does it per item.

``Model.model_construct`` skips validation but still walks every field for aliases and defaults:
in the gateway's batch intake, four constructions per notification were a tenth of its CPU (py-spy,
``make profile``). :func:`trusted` makes the same instance directly when the values name every
field, as ``model_construct`` would leave it (``tests/unit/test_trusted.py`` holds them equal).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def trusted(cls: type[M], **values: Any) -> M:
    """``cls.model_construct(**values)`` for values naming every field of ``cls`` (a model with
    no extra fields, private attributes or post-init hook); anything else is a ValueError."""
    if values.keys() != cls.__pydantic_fields__.keys():
        missing = cls.__pydantic_fields__.keys() - values.keys()
        unknown = values.keys() - cls.__pydantic_fields__.keys()
        raise ValueError(f"{cls.__name__}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
