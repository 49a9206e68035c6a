"""Checking recorded HTTP exchanges against the types of a provider's official SDK.

The providers' official SDKs are generated from their published API specs (OpenAI's,
Anthropic's, Runway's and Luma's by Stainless, ElevenLabs' by Fern, Azure Image Analysis' by
TypeSpec/autorest) or hand-typed by the provider (google-genai, replicate, huggingface_hub's
task types). The test machine installs them from PyPI (the ``test`` extra), so their types
are the provider's spec as published, and nothing fetched from elsewhere is committed here
(the workplace rule on fetched snapshots: docs/architecture.md).

An :class:`Api` lists a provider's :class:`Operation` s: the method and path template, and
the type of each part of the exchange:

* the request: the query parameters, the body (JSON, ``multipart/form-data`` parsed with the
  standard library's MIME parser, independent of the simulator's, or raw bytes of declared
  media types);
* the answer: each success status's type (or the media type of bytes), each server-sent
  event's type, and the error body's type where the SDK (or the provider's docs) has one.

Types are validated with pydantic: a JSON body or answer with ``validate_json(strict=True)``,
query and form values (strings on the wire) in lax mode. Request types are *closed*
(:func:`wire`): a key the SDK does not know is refused, at any depth. Answer models keep
the SDK's own setting (Stainless models allow extra keys; google-genai's forbid them).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import email.parser
import email.policy
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NotRequired, Required

import httpx
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.v1 import BaseModel as V1BaseModel
from pydantic.v1 import ValidationError as V1ValidationError
from typing_extensions import TypedDict, is_typeddict

_CLOSED = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class SpecMismatch(AssertionError):
    """A request or answer that the provider's API, as its SDK types it, does not allow."""


# -- SDK request types as closed types of the wire's names ------------------------------------
_WIRE: dict[int, Any] = {}
_BUILDING = object()


def wire(kind: Any) -> Any:
    """``kind`` (an SDK's request type) as pydantic should validate the JSON on the wire.

    * A ``TypedDict`` or dataclass becomes a new ``TypedDict`` keyed by the *wire* names: a
      Stainless SDK names a field in Python and gives its JSON name as
      ``Annotated[..., PropertyInfo(alias="promptImage")]`` (its ``transform`` renames the
      keys when it sends them), which pydantic does not read. The new type refuses keys it
      does not declare (pydantic ignores them unless ``extra="forbid"``).
    * ``Iterable``/``Sequence`` become ``list`` (pydantic validates an ``Iterable`` lazily,
      so its items would go unchecked).
    * Everything else (pydantic models, literals, scalars) is kept: a model carries its own
      config and aliases.

    The SDKs' own classes are not modified. A type that refers back to itself (rare in
    request types) is checked as a plain object below the first level.
    """
    key = id(kind)
    if key in _WIRE:
        return dict[str, Any] if _WIRE[key] is _BUILDING else _WIRE[key]
    if is_typeddict(kind) or (dataclasses.is_dataclass(kind) and isinstance(kind, type)):
        _WIRE[key] = _BUILDING
        fields: dict[str, Any] = {}
        hints = typing.get_type_hints(kind, include_extras=True)
        if is_typeddict(kind):
            # Required[...]/NotRequired[...] as the hints spell them, else the totality of
            # the class that declared the key (__required_keys__: a total subclass of a
            # non-total base, as ImageGenerateParamsStreaming, keeps the base's keys
            # optional) — __required_keys__ alone is wrong when the SDK's module has string
            # annotations (``from __future__ import annotations``) that spell the markers.
            declared = set(getattr(kind, "__required_keys__", hints))
            required = {
                name
                for name, hint in hints.items()
                if typing.get_origin(hint) in (Required, typing.Required)
                or (
                    name in declared
                    and typing.get_origin(hint) not in (NotRequired, typing.NotRequired)
                )
            }
        else:
            required = {
                f.name
                for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
        for name, hint in hints.items():
            hint = _unwrap_required(hint)
            alias = _alias(hint)
            fields[alias or name] = (Required if name in required else NotRequired)[wire(hint)]
        made = typed_dict(kind.__name__, fields)
        _WIRE[key] = made
        return made
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        inner, *meta = args
        kept = [m for m in meta if type(m).__name__ != "PropertyInfo"]
        return typing.Annotated[(wire(inner), *kept)] if kept else wire(inner)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(wire(a) for a in args)]  # noqa: UP007
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) and args:
        return list.__class_getitem__(wire(args[0]))
    if origin is dict and len(args) == 2:
        return dict.__class_getitem__((args[0], wire(args[1])))
    return kind


def typed_dict(name: str, fields: dict[str, Any]) -> Any:
    """A closed ``TypedDict`` named ``name`` of ``fields`` (wire name -> type, wrapped in
    ``Required``/``NotRequired``), made at run time from an SDK's type."""
    made = typing.cast(Any, TypedDict)(name, fields)
    made.__pydantic_config__ = _CLOSED
    return made


def _unwrap_required(hint: Any) -> Any:
    while typing.get_origin(hint) in (Required, NotRequired, typing.Required, typing.NotRequired):
        hint = typing.get_args(hint)[0]
    return hint


def _alias(hint: Any) -> str | None:
    if typing.get_origin(hint) is typing.Annotated:
        for meta in typing.get_args(hint)[1:]:
            alias = getattr(meta, "alias", None)
            if type(meta).__name__ == "PropertyInfo" and isinstance(alias, str):
                return alias
    return None


def _drain(value: Any) -> None:
    """Consume the lazy validators pydantic leaves for ``Iterable[...]`` fields (the
    Stainless TypedDicts type lists so), so their items are validated too."""
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, list | tuple | Iterator):
        for item in value:
            _drain(item)


def validate(kind: Any, data: bytes | Any, *, strict: bool) -> list[str]:
    """What is wrong with ``data`` (JSON bytes, or Python values) as a ``kind``."""
    if isinstance(kind, type) and issubclass(kind, V1BaseModel):
        # replicate 1.x's models are pydantic.v1 models: their own parsing.
        try:
            kind.parse_raw(data) if isinstance(data, bytes) else kind.parse_obj(data)
        except V1ValidationError as exc:
            return [f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return []
    adapter: TypeAdapter[Any] = _adapter(kind)
    try:
        if isinstance(data, bytes):
            _drain(adapter.validate_json(data, strict=strict))
        else:
            _drain(adapter.validate_python(data, strict=strict))
    except ValidationError as exc:
        return [
            f"{'/'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
            + (f" (got {str(e['input'])[:80]!r})" if e["type"] != "missing" else "")
            for e in exc.errors()
        ]
    return []


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    if id(kind) not in _ADAPTERS:
        _ADAPTERS[id(kind)] = TypeAdapter(kind)
    return _ADAPTERS[id(kind)]


def azure_typed(model: type, _made: dict[type, Any] | None = None) -> Any:
    """An Azure SDK model (``azure.ai.vision...models``, an autorest ``_model_base.Model``:
    a mapping, not a pydantic model) as a closed ``TypedDict`` of its wire names, so that
    pydantic can validate JSON against it. A field whose annotation is not ``Optional`` is
    required (autorest marks the spec's required properties so)."""
    made = {} if _made is None else _made
    if model in made:
        return made[model]
    module = sys.modules[model.__module__]
    package = sys.modules[model.__module__.rsplit(".", 1)[0]]
    # The models name each other as "_models.X", imported only under TYPE_CHECKING.
    hints = typing.get_type_hints(model, {**vars(module), "_models": package})
    fields: dict[str, Any] = {}

    def convert(hint: Any) -> Any:
        if isinstance(hint, type) and _is_azure_model(hint):
            return azure_typed(hint, made)
        args = typing.get_args(hint)
        if not args:
            return hint
        origin = typing.get_origin(hint)
        if origin is typing.Union:
            return typing.Union[tuple(convert(a) for a in args)]  # noqa: UP007
        if origin is list:
            return list[convert(args[0])]  # type: ignore[misc]
        return hint

    # The class's rest_field()s, each named on the wire by its `name=` or else its attribute
    # (autorest's _model_base, which sets the same up lazily on first instantiation).
    rest_fields = {a: v for a, v in vars(model).items() if type(v).__name__ == "_RestField"}
    for attr, rest in rest_fields.items():
        hint = hints[attr]
        optional = type(None) in typing.get_args(hint)
        kind = convert(hint)
        fields[rest._rest_name_input or attr] = NotRequired[kind] if optional else Required[kind]
    typed = typed_dict(model.__name__, fields)
    made[model] = typed
    return typed


def _is_azure_model(kind: type) -> bool:
    return any(
        base.__name__ == "Model" and base.__module__.endswith("._model_base")
        for base in kind.__mro__
    )


# -- operations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    """One call of a provider's API and the types of its parts.

    ``template`` is the full path; ``{name}`` matches one segment, ``{name*}`` several.
    An answer type that is a string is a media-type prefix ("image/", "audio/"): the answer
    is bytes of that kind.
    """

    id: str
    method: str
    template: str
    body: Any = None  # a JSON body's type
    form: Any = None  # a multipart/form-data body's type (file fields typed as bytes)
    raw: tuple[str, ...] = ()  # media-type prefixes of a raw-bytes body
    query: Any = None  # the query parameters' type; None: the operation takes none
    answers: dict[int, Any] = field(default_factory=dict)
    stream: Any = None  # each server-sent event's `data` type, for a text/event-stream answer
    error: Any = None  # the error body's type (any status >= 400)
    body_required: bool = True

    @property
    def key(self) -> str:
        return f"{self.method.upper()} {self.template}"

    def pattern(self) -> re.Pattern[str]:
        regex = ""
        for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", self.template):
            regex += re.escape(literal)
            if name:
                regex += ".+" if name.endswith("*") else "[^/]+"
        return re.compile(regex + "$")


def _bare(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


class Api:
    """A provider's API as its official SDK (or, lacking one, its documentation) types it."""

    def __init__(self, name: str, operations: list[Operation]) -> None:
        self.name = name
        self.operations = {op.id: op for op in operations}

    def match(self, request: httpx.Request, allowed: list[str]) -> Operation:
        """The operation among ``allowed`` (ids) that ``request`` is a call of."""
        for op_id in allowed:
            op = self.operations[op_id]
            if op.method.upper() == request.method and op.pattern().match(request.url.path):
                return op
        raise SpecMismatch(
            f"{self.name}: {request.method} {request.url.path} is none of the operations "
            f"{', '.join(f'{i} ({self.operations[i].key})' for i in allowed)}"
        )

    def check_request(self, request: httpx.Request, op: Operation) -> None:
        """Raise SpecMismatch listing everything about ``request`` that ``op`` disallows."""
        problems: list[str] = []
        params = request.url.params
        if op.query is None:
            problems += [f"query parameter {name!r} is not in the API" for name in params]
        elif params:
            query = {k: v[0] if len(v) == 1 else v for k in params for v in [params.get_list(k)]}
            problems += [f"query {p}" for p in validate(wire(op.query), query, strict=False)]
        problems += self._check_body(request, op)
        if problems:
            raise SpecMismatch(
                f"{self.name}: {request.method} {request.url.path} does not conform to "
                f"{op.id}:\n  " + "\n  ".join(problems)
            )

    def _check_body(self, request: httpx.Request, op: Operation) -> list[str]:
        content = request.content
        takes = op.body is not None or op.form is not None or op.raw
        if not content:
            return (
                ["the operation requires a body; none was sent"]
                if takes and op.body_required
                else []
            )
        if not takes:
            return [f"a body of {len(content)} bytes was sent; the operation takes none"]
        media = _bare(request.headers.get("content-type"))
        if op.body is not None and media == "application/json":
            return [f"body {p}" for p in validate(wire(op.body), content, strict=True)]
        if op.form is not None and media == "multipart/form-data":
            return self._check_form(request, op.form)
        if any(media.startswith(prefix) for prefix in op.raw):
            return []  # raw bytes of a declared media type (an image, a sound)
        return [f"body sent as {media!r}; the operation takes {self._takes(op)}"]

    @staticmethod
    def _takes(op: Operation) -> list[str]:
        return [
            *(["application/json"] if op.body is not None else []),
            *(["multipart/form-data"] if op.form is not None else []),
            *op.raw,
        ]

    @staticmethod
    def _check_form(request: httpx.Request, kind: Any) -> list[str]:
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head + request.content
        )
        if not message.is_multipart():
            return ["the multipart body does not parse"]
        form: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                return ["a form part has no name"]
            payload = part.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            value: Any = raw if part.get_filename() is not None else raw.decode("utf-8")
            if name in form:
                form[name] = [
                    *(form[name] if isinstance(form[name], list) else [form[name]]),
                    value,
                ]
            else:
                form[name] = value
        return [f"form {p}" for p in validate(wire(kind), form, strict=False)]

    def check_exchange(
        self, request: httpx.Request, response: httpx.Response, allowed: list[str]
    ) -> str:
        """Check one request and its answer against the one of ``allowed`` it calls; its id."""
        op = self.match(request, allowed)
        self.check_request(request, op)
        self.check_response(op, response)
        return op.id

    def check_response(self, op: Operation, response: httpx.Response) -> None:
        """Raise SpecMismatch if ``op`` does not allow ``response`` (status, type, body)."""
        where = f"{self.name}: the answer to {op.id} ({response.status_code})"
        media = _bare(response.headers.get("content-type"))
        if response.status_code >= 400:
            if op.error is None:
                return  # neither the SDK nor the docs type this failure's body
            kind: Any = op.error
        elif response.status_code not in op.answers:
            raise SpecMismatch(f"{where}: status not among {sorted(op.answers)}")
        else:
            kind = op.answers[response.status_code]
        problems: list[str] = []
        if isinstance(kind, str):
            if not media.startswith(kind):
                problems.append(f"answered {media!r}, the API answers {kind}*")
        elif media == "text/event-stream" and op.stream is not None:
            # Server-sent events: each event's JSON `data` is one of the stream's type.
            for number, line in enumerate(response.text.splitlines()):
                if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                    found = validate(op.stream, line[5:].strip().encode(), strict=True)
                    problems += [f"event on line {number + 1}: {p}" for p in found]
        elif media != "application/json" and not media.endswith("+json"):
            problems.append(f"answered {media!r}, the API answers application/json")
        else:
            problems += validate(kind, response.content or b"null", strict=True)
        if problems:
            raise SpecMismatch(f"{where} does not conform:\n  " + "\n  ".join(problems))
