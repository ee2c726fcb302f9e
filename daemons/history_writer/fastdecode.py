"""A cheaper `decode()` for the history path, refusing exactly what `decode()` refuses.

`decode()` validates money through two Python validators (`U128`, `Dec`) that pydantic-core
calls back for every amount: about a third of the writer's validation time. The history-writer
never reads a payload's amounts, only the envelope and the link fields. So each event model is
mirrored here with the same fields and the same types, except that a money field accepts only a
form that `decode()` certainly accepts and that pydantic-core can check on its own:

- `U128`: a string of 1 to 38 ASCII digits (below 10**38, within u128), or a JSON integer in
  [0, 2**128 - 1];
- `Dec`: a plain or exponent decimal string (`-12.5`, `1E-8`: always finite).

Every other type (timestamps, UUIDs, literals, bounds, nested models, `extra="forbid"`) is the
very same pydantic type, so it validates identically. A message the mirror refuses goes to
`decode()`, which gives the verdict and the reason; so the mirror only ever saves time on a
message `decode()` would accept, and a dead letter and its reason stay exactly as they were.
tests/fuzz/test_fuzz_history_fastdecode.py checks that property on arbitrary and mutated messages.

The mirrored event's amounts stay strings; its envelope and link fields equal `decode()`'s.
"""

from __future__ import annotations

import copy
import types
import typing
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, Union

import annotated_types
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    Strict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from daemons.core.amounts import U128_MAX
from daemons.core.events import TOPICS, Envelope, _parse_decimal, _parse_u128, decode

_FastU128 = Union[  # noqa: UP007 - a runtime union of Annotated types
    Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9]{1,38}$")],
    Annotated[int, Strict(), annotated_types.Ge(0), annotated_types.Le(U128_MAX)],
]
_FastDec = Annotated[str, StringConstraints(strict=True, pattern=r"^-?[0-9]{1,60}(\.[0-9]{1,60})?(E[-+][0-9]{1,4})?$")]


# field metadata the mirror understands: bounds (kept), the money validators (replaced by the
# types above), and serialisation notes (no effect on validation)
_UNDERSTOOD = (annotated_types.BaseMetadata, BeforeValidator, PlainSerializer, WithJsonSchema)


def _mirror(annotation: Any, metadata: list[Any]) -> Any:
    """`annotation` with every money type replaced by its pydantic-core-only subset.
    `metadata`: what pydantic lifted out of the field's own `Annotated[...]` (U128's validator)."""
    validators = [m for m in metadata if isinstance(m, BeforeValidator)]
    if validators:
        (validator,) = validators
        if validator.func is _parse_u128 and annotation is int:
            return _FastU128
        if validator.func is _parse_decimal and annotation is Decimal:
            return _FastDec
        raise TypeError(f"no mirror for the validator {validator!r}")
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *extra = typing.get_args(annotation)
        if any(isinstance(m, BeforeValidator) for m in extra):
            if not all(isinstance(m, _UNDERSTOOD) and not isinstance(m, annotated_types.BaseMetadata) for m in extra):
                raise TypeError(f"no mirror for {annotation!r}")
            return _mirror(inner, extra)  # the money type: its serializer and schema go with it
        return Annotated[(_mirror(inner, []), *extra)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_mirror(a, []) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is list:
        (item,) = typing.get_args(annotation)
        return list[_mirror(item, [])]  # type: ignore[misc]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _mirror_model(annotation)
    return annotation


@cache
def _mirror_model(model: type[BaseModel]) -> type[BaseModel]:
    decorators = model.__pydantic_decorators__
    if decorators.model_validators or decorators.field_validators or decorators.validators:
        raise TypeError(f"{model.__name__} has validators the mirror would not run")
    if model.model_config.get("extra") != "forbid":
        raise TypeError(f"{model.__name__}: the mirror assumes extra='forbid'")
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        unknown = [m for m in info.metadata if not isinstance(m, _UNDERSTOOD)]
        if unknown:  # e.g. strict=True: dropping it would make the mirror accept more
            raise TypeError(f"{model.__name__}.{name}: metadata the mirror does not carry: {unknown!r}")
        mirrored = copy.copy(info)
        # bounds (ge, le) stay with the field; the money validator is replaced by the type
        mirrored.metadata = [m for m in info.metadata if isinstance(m, annotated_types.BaseMetadata)]
        fields[name] = (_mirror(info.annotation, list(info.metadata)), mirrored)
    return create_model(f"Fast{model.__name__}", __config__=ConfigDict(extra="forbid", frozen=True), **fields)


MIRRORS: dict[str, type[BaseModel]] = {
    topic: _mirror_model(Envelope[spec.payload])  # type: ignore[name-defined]
    for topic, spec in TOPICS.items()
}
_VALIDATORS = {topic: model.__pydantic_validator__ for topic, model in MIRRORS.items()}
_VERSIONS = {topic: spec.schema_version for topic, spec in TOPICS.items()}


def decode_for_history(topic: str, raw: bytes | None) -> Any:
    """An event with `decode()`'s envelope and link values, or `decode()`'s EventDecodeError."""
    validator = _VALIDATORS.get(topic)
    if validator is not None and raw is not None:
        try:
            event = validator.validate_json(raw)
        except ValidationError:
            pass
        else:
            if event.event_type == topic and event.schema_version == _VERSIONS[topic]:
                return event
    return decode(topic, raw)  # raises with decode()'s own reason
