"""docs/params.md, generated from the params schema (``fclab params-doc``)."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from fclab.framework.params.models import Params


def _type_text(annotation) -> str:
    """A reader's form of a field's type: ``float | None``, ``one of "holm", "fdr_bh"``, ``list of ...``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        if set(args) == {str, dict[str, Any]}:
            return "plugin: name or {name, options}"
        return " or ".join(_type_text(a) for a in args)
    if origin in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1 and len(set(inner)) == 1:
            return f"[{', '.join(_type_text(a) for a in inner)}]"
        return f"list of {_type_text(inner[0])}" if inner else "list"
    if origin is dict:
        return f"map of {_type_text(args[0])} to {_type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section (below)"
    return getattr(annotation, "__name__", str(annotation)).replace("Any", "any")


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(below)"
    if isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
        value = {k: v.model_dump(exclude_defaults=True) for k, v in value.items()}
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _nested(annotation) -> list[tuple[str, type[BaseModel]]]:
    """The sections inside a field's type, with the path suffix they sit at ('', '[]', '.<name>')."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    out = []
    if origin in (typing.Union, types.UnionType):
        for a in args:
            out += _nested(a)
    elif origin in (list, tuple):
        out += [("[]" + s, m) for a in args for s, m in _nested(a)]
    elif origin is dict:
        out += [(".<name>" + s, m) for s, m in _nested(args[1])]
    return out


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body (or a base's): pydantic's own
    extractor, the one ``use_attribute_docstrings`` runs (private API; the params.md test guards it)."""
    from pydantic._internal._docs_extraction import extract_docstrings_from_cls

    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(extract_docstrings_from_cls(cls, use_inspect=True))
    return docs


def params_markdown() -> str:
    """docs/params.md: every key params.yaml accepts, with its type, default and meaning, generated
    from the schema (``fclab params-doc``). The comments in params.yaml do not survive
    ``dvc exp run -S`` (DVC rewrites the file); this page does, and a test keeps it in sync."""
    out = ["# params.yaml reference", "",
           "Generated from the schema in `framework/params/` by `fclab params-doc > docs/params.md`; a test",
           "checks that this page matches the schema. Plugin options are listed by `fclab plugins --all`.", ""]
    queue: list[tuple[str, type[BaseModel]]] = [(name, f.annotation) for name, f in Params.model_fields.items()]
    seen = set()
    while queue:
        path, model = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"## `{path}`", ""] + ([doc, ""] if doc and not doc.startswith("Base of") else [])
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        docs = attribute_docs(model)
        for name, field in model.model_fields.items():
            desc = (field.description or docs.get(name, "")).replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {_type_text(field.annotation).replace('|', '/')} | {_default_text(field)} | {desc} |")
            queue += [(f"{path}.{name}{suffix}", m) for suffix, m in _nested(field.annotation)]
        out.append("")
    return "\n".join(out)
