"""The pydantic base of every config section (a task family's, the model's, training's,
a sweep's): an unknown key is an error, every assignment is validated, and a YAML
boolean is never read as a number (``train.steps: true`` would otherwise run 1 step)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

# The pydantic error type of a boolean given for a number; ``ctx["key"]`` names the field.
BOOL_FOR_NUMBER = "bool_for_number"


def bool_for_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a boolean where ``annotation`` wants a number (and no bool),
    looking inside lists, tuples and mappings."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return bool_for_number(args[0], value)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, bool):
            return any(bool_for_number(a, value) for a in args) and not any(_takes_bool(a) for a in args)
        return any(bool_for_number(a, value) for a in args if typing.get_origin(a) is not None)
    if isinstance(value, bool):
        return annotation in (int, float)
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple)):
        items = [a for a in args if a is not Ellipsis] or [Any]
        return any(bool_for_number(items[min(i, len(items) - 1)], v) for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(bool_for_number(args[1], v) for v in value.values())
    return False


def _takes_bool(annotation: Any) -> bool:
    if annotation in (bool, Any):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    return False


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if field is not None and bool_for_number(field.annotation, value):
                    raise PydanticCustomError(
                        BOOL_FOR_NUMBER,
                        "a number is needed, not the YAML boolean in {value} (true/false/yes/no/on/off are "
                        "booleans in YAML); write a number",
                        {"key": key, "value": repr(value)},
                    )
        return data
