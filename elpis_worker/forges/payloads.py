"""The building blocks of the providers' payload models, and `parse`, which turns a pydantic error into
a `PayloadError` naming the payload field ("payload field issue.number is missing").

A payload is read twice, on purpose. First a lenient model (every field optional, a value of the wrong
type read as absent) says which event this is, its action and its repository: an event or action Elpis
ignores is never refused for a field it does not need. Once the event and its action are ones Elpis
acts on, the event's own model is parsed, and a field that event must have (`Text`, `Number`) is
checked there: missing, empty or of the wrong type, it is a 422 naming the field. Fields an event may
lack stay optional (`MaybeText`, `Maybe[...]`) and read as None when absent or malformed. Only names,
numbers, labels and branches are modelled: no URL of a payload is ever read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, StringConstraints, ValidationError

from elpis_worker.forges.errors import PayloadError

__all__ = ["Flag", "Labels", "Maybe", "MaybeNumber", "MaybeText", "Number", "Payload", "Text", "parse"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Payload(BaseModel):
    """A provider's payload, or a part of one: the fields Elpis reads; every other field is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object_or_none(value: Any) -> Any:
    return value if isinstance(value, Mapping) else None


def _true(value: Any) -> bool:
    return value is True


def _label_names(value: Any) -> tuple[str, ...]:
    """Label names from GitHub/Gitea ({"name"}) or GitLab ({"title"}) label objects, or plain strings."""
    names: list[str] = []
    for label in value if isinstance(value, list) else []:
        if isinstance(label, str):
            names.append(label)
        elif isinstance(label, Mapping):
            name = label.get("name") or label.get("title")
            if isinstance(name, str):
                names.append(name)
    return tuple(names)


# A field the event must have: a non-empty string / an integer (not a bool, not "7").
Text = Annotated[str, Strict(), StringConstraints(min_length=1)]
Number = Annotated[int, Strict()]
# A field the event may lack: None when absent, empty or of another type.
MaybeText = Annotated[str | None, BeforeValidator(_text_or_none)]
MaybeNumber = Annotated[int | None, BeforeValidator(_number_or_none)]
# An object the event may lack (None when absent or not an object); present, its own fields are checked.
Maybe = Annotated[T | None, BeforeValidator(_object_or_none)]
Labels = Annotated[tuple[str, ...], BeforeValidator(_label_names)]
# True only when the payload says `true`.
Flag = Annotated[bool, BeforeValidator(_true)]

_PROBLEMS = {
    "missing": "is missing",
    "string_type": "is not a string",
    "string_too_short": "is empty",
    "int_type": "is not an integer",
    "model_type": "is not an object",
    "model_attributes_type": "is not an object",
    "dict_type": "is not an object",
}


def parse(model: type[M], payload: Any) -> M:
    """`payload` read as `model`; a PayloadError naming the first field that is missing or invalid."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        if error["type"] != "missing" and error.get("input", ...) is None:
            problem = "is missing (null)"
        else:
            problem = _PROBLEMS.get(error["type"], f"is not valid: {error['msg']}")
        raise PayloadError(f"payload field {where} {problem}") from None
