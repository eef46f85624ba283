"""The base of every params schema, a stage's or a plugin's, and its one-line validation errors."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from fclab.framework.errors import did_you_mean


def _admits_bool(annotation) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in typing.get_args(annotation))
    return False


class Section(BaseModel):
    """Base of every params schema (stages and plugins): unknown keys are errors, and a YAML boolean
    (true/false, yes/no, on/off) is never read as a number or a string: ``n_perm: yes`` would
    otherwise become 1."""

    # Field meanings are the docstrings under the fields, read when docs/params.md is generated
    # (attribute_docs): pydantic's use_attribute_docstrings would parse every model's source at every
    # import, ~70 ms of each stage's start-up.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_other_types(cls, value, info: ValidationInfo):
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is a YAML boolean (so are yes/no/on/off), not a valid value "
                             "here; quote it if a string is meant")
        return value


def _loc(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model, loc):
    """The pydantic model class that holds the last key of ``loc`` (for suggestions), or None."""
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        while typing.get_origin(ann) in (list, dict, typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = next((a for a in reversed(args) if isinstance(a, type) and issubclass(a, BaseModel)), args[-1])
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def first_error(exc: ValidationError, prefix: str = "", model=None) -> str:
    err = exc.errors()[0]
    path = _loc(err["loc"])
    path = f"{prefix}.{path}" if prefix and path else (prefix or path)
    msg = err["msg"].removeprefix("Value error, ")
    if isinstance(err.get("input"), bool) and err["type"] != "value_error":  # inside a list or a mapping's key
        key = err["loc"][-1:] == ("[key]",)
        if key:  # pydantic's location holds the key as 1 or 0: name the mapping instead
            path = _loc(err["loc"][:-2])
            path = f"{prefix}.{path}" if prefix and path else (prefix or path)
        msg = (f"{'key ' if key else ''}{str(err['input']).lower()} is a YAML boolean (so are yes/no/on/off), "
               "not a valid value here; quote it if a string is meant")
    if err["type"] == "extra_forbidden":
        holder = _model_at(model, err["loc"]) if model is not None else None
        msg = "unknown key" + (did_you_mean(err["loc"][-1], holder.model_fields) if holder else "")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {msg}{tail}"
