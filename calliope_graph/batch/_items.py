"""Batch items: a JSONL or CSV file of flow inputs, a directory of media files, or a list.

Items stream (generators): a 1,000,000-line file is read a line at a time. Each item has a
stable id — its ``id`` column / field when given, else a short hash of its inputs — that
names its checkpoint thread and its output folder, so a resumed batch finds the same work.

The hash (12 hex digits of SHA-256) is over the inputs as the flow receives them: text as
text, and a media input as its resolved path, size and modification time (cheap, and a
changed file is a new item); reading whole media files to hash them would cost more than
the batch's bookkeeping should. Two rows with the same inputs and no ``id`` are a duplicate
(an error naming both lines), since they would share one thread and one folder.

A malformed row (bad JSON, an unknown column, a missing required input, a duplicate id) is a
:class:`BatchInputError` naming the file and line. It is raised when the stream reaches it:
items before it run and keep their manifest lines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calliope_graph.errors import BatchInputError, ConfigurationError

if TYPE_CHECKING:
    from calliope_graph.flow.spec import FlowSpec, InputSpec

__all__ = [
    "MEDIA_TYPES",
    "BatchInputError",
    "Item",
    "count_items",
    "item_id",
    "iter_items",
    "thread_id_for",
]

#: Flow input types whose values are files.
MEDIA_TYPES = ("image", "audio", "video")

_MEDIA_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"),
    "audio": (".wav", ".mp3", ".m4a", ".ogg", ".flac", ".webm"),
    "video": (".mp4", ".webm", ".mov"),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Names a batch keeps in its output folder: no item may be called one of them.
RESERVED_IDS = frozenset(
    {"batch.jsonl", "batch.html", "checkpoints.sqlite", "checkpoints.sqlite-wal"}
    | {"checkpoints.sqlite-shm", "cache.sqlite"}
)


@dataclass(frozen=True)
class Item:
    """One item of a batch: its stable id, the flow's inputs, and where it came from."""

    id: str
    inputs: dict[str, Any]
    source: str = ""
    """``file:line`` (or ``item N`` for a list), for messages and the manifest."""
    explicit_id: bool = field(default=False, compare=False)


def thread_id_for(item_id: str) -> str:
    """The checkpoint thread of an item (one thread per item in the batch's store)."""
    return f"batch-{item_id}"


def item_id(inputs: Mapping[str, Any], media: Iterable[str] = ()) -> str:
    """The stable id of ``inputs`` (no ``id`` given): 12 hex digits of SHA-256 over the
    inputs, media inputs (names in ``media``) as resolved path + size + mtime."""
    media = set(media)
    canonical: dict[str, Any] = {}
    for name in sorted(inputs):
        value = inputs[name]
        if name in media and isinstance(value, str | os.PathLike):
            path = Path(value).expanduser().resolve()
            try:
                stat = path.stat()
                value = [str(path), stat.st_size, stat.st_mtime_ns]
            except OSError:
                value = [str(path), None, None]  # missing: the run says so, the id is stable
        elif not isinstance(value, str | int | float | bool | type(None) | list | dict):
            value = getattr(value, "path", None) or repr(value)
        canonical[name] = value
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# -- reading ------------------------------------------------------------------------------------
def iter_items(
    source: str | Path | Iterable[Mapping[str, Any] | Item], spec: FlowSpec
) -> Iterator[Item]:
    """Items of ``source`` for the flow ``spec``: a ``.jsonl``/``.ndjson``, ``.csv``/``.tsv``
    file, a directory of media files, or an iterable of input mappings (an ``id`` key is the
    item id). Ids are checked unique as the stream goes; a missing or unknown source is an
    error at once, before anything is read."""
    return _unique(_raw_items(source, spec))


def _unique(items: Iterator[Item]) -> Iterator[Item]:
    seen: dict[str, str] = {}
    for item in items:
        earlier = seen.get(item.id)
        if earlier is not None:
            path, _, line = item.source.rpartition(":")
            why = (
                f"id {item.id!r} is used twice"
                if item.explicit_id
                else f"the same inputs as {earlier} (id {item.id})"
            )
            raise BatchInputError(
                f"{item.source}: {why} (first at {earlier}). Each item needs its own id: give "
                "rows an 'id' column/field, or remove the duplicate.",
                path=path or None,
                line=int(line) if line.isdigit() else None,
            )
        seen[item.id] = item.source
        yield item


def _raw_items(
    source: str | Path | Iterable[Mapping[str, Any] | Item], spec: FlowSpec
) -> Iterator[Item]:
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            return _directory_items(path, spec)
        if not path.is_file():
            raise BatchInputError(
                f"Batch inputs {str(path)!r} do not exist: give a .jsonl or .csv file of flow "
                "inputs, or a directory of media files.",
                path=str(path),
            )
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            return _jsonl_items(path, spec)
        if suffix in (".csv", ".tsv"):
            return _csv_items(path, spec, delimiter="\t" if suffix == ".tsv" else ",")
        raise BatchInputError(
            f"Batch inputs {str(path)!r}: unknown format {suffix or '(no extension)'!r}. Use "
            "a .jsonl file (one JSON object per line), a .csv file (a header row of input "
            "names), or a directory of media files.",
            path=str(path),
        )
    return _mapping_items(source, spec)


def _media_inputs(spec: FlowSpec) -> list[str]:
    return [name for name, declared in spec.inputs.items() if declared.type in MEDIA_TYPES]


def _describe_inputs(spec: FlowSpec) -> str:
    return (
        ", ".join(
            f"{name} ({declared.shape}{'' if declared.required else ', optional'})"
            for name, declared in spec.inputs.items()
        )
        or "none"
    )


def _make_item(
    values: dict[str, Any],
    spec: FlowSpec,
    *,
    where: str,
    base: Path | None,
    path: str | None,
    line: int | None,
) -> Item:
    """An item of one row: checks its names, resolves media paths against ``base``."""
    raw_id = values.pop("id", None)
    unknown = sorted(set(values) - set(spec.inputs))
    if unknown:
        raise BatchInputError(
            f"{where}: flow {spec.name!r} has no input {unknown[0]!r}. Its inputs: "
            f"{_describe_inputs(spec)} (and an optional 'id').",
            path=path,
            line=line,
        )
    inputs: dict[str, Any] = {}
    for name, declared in spec.inputs.items():
        value = values.get(name)
        if value is None or value == "":
            if declared.required:
                raise BatchInputError(
                    f"{where}: no value for input {name!r} ({declared.shape}), which flow "
                    f"{spec.name!r} requires.",
                    path=path,
                    line=line,
                )
            continue
        if declared.type in MEDIA_TYPES:
            if not isinstance(value, str):
                raise BatchInputError(
                    f"{where}: input {name!r} is a {declared.type}: give a file path (relative "
                    f"to the inputs file), not {type(value).__name__}.",
                    path=path,
                    line=line,
                )
            value = _media_path(value, base)
        elif declared.type in ("list", "object"):
            value = _shaped(name, declared, value, where=where, base=base, path=path, line=line)
        inputs[name] = value
    if raw_id is None or raw_id == "":
        return Item(item_id(inputs, _media_inputs(spec)), inputs, where)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise BatchInputError(
            f"{where}: the id must be a string or a number, not {raw_id!r}.", path=path, line=line
        )
    text = str(raw_id).strip()
    if not _ID.match(text) or text in RESERVED_IDS:
        raise BatchInputError(
            f"{where}: id {text!r} cannot name the item's output folder: use 1–128 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
            + (" (and not a file the batch keeps)" if text in RESERVED_IDS else "")
            + ".",
            path=path,
            line=line,
        )
    return Item(text, inputs, where, explicit_id=True)


def _media_path(value: str, base: Path | None) -> str:
    """A media path of the inputs file, absolute (relative ones are to the file's folder)."""
    file = Path(value).expanduser()
    if not file.is_absolute() and base is not None:
        file = base / file
    return str(file.absolute())


def _shaped(
    name: str,
    declared: InputSpec,
    value: Any,
    *,
    where: str,
    base: Path | None,
    path: str | None,
    line: int | None,
) -> Any:
    """A list or object input's value (a JSONL value, or a CSV cell's JSON text) checked
    against its declaration; a list of media gets absolute paths."""
    try:
        value = declared.check(name, value)
    except ConfigurationError as exc:
        raise BatchInputError(f"{where}: {exc}", path=path, line=line) from None
    if declared.is_list and declared.element in MEDIA_TYPES:
        value = [_media_path(v, base) if isinstance(v, str) else v for v in value]
    return value


def _jsonl_items(path: Path, spec: FlowSpec) -> Iterator[Item]:
    base = path.parent
    with path.open(encoding="utf-8-sig") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                values = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BatchInputError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno}). Each line "
                    'is one JSON object of flow inputs, e.g. {"id": "a", "text": "a lighthouse"}.',
                    path=str(path),
                    line=number,
                ) from None
            if not isinstance(values, dict):
                raise BatchInputError(
                    f"{where}: a line must be a JSON object of flow inputs, not "
                    f"{type(values).__name__}.",
                    path=str(path),
                    line=number,
                )
            yield _make_item(values, spec, where=where, base=base, path=str(path), line=number)


def _csv_items(path: Path, spec: FlowSpec, *, delimiter: str) -> Iterator[Item]:
    base = path.parent
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip() for h in header]
        unknown = [n for n in names if n != "id" and n not in spec.inputs]
        if unknown or not names:
            raise BatchInputError(
                f"{path}:1: the header names {unknown[0] if unknown else '(nothing)'!r}, which "
                f"is not an input of flow {spec.name!r}. Its inputs: {_describe_inputs(spec)} "
                "(and an optional 'id').",
                path=str(path),
                line=1,
            )
        missing = [n for n, d in spec.inputs.items() if d.required and n not in names]
        if missing:
            raise BatchInputError(
                f"{path}:1: no column for input {missing[0]!r}, which flow {spec.name!r} "
                f"requires. Its inputs: {_describe_inputs(spec)}.",
                path=str(path),
                line=1,
            )
        for row in reader:
            number = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path}:{number}"
            if len(row) != len(names):
                raise BatchInputError(
                    f"{where}: {len(row)} cells for {len(names)} columns ({', '.join(names)}); "
                    "quote cells that contain the delimiter.",
                    path=str(path),
                    line=number,
                )
            values: dict[str, Any] = dict(zip(names, row, strict=True))
            yield _make_item(values, spec, where=where, base=base, path=str(path), line=number)


def _directory_items(folder: Path, spec: FlowSpec) -> Iterator[Item]:
    media = _media_inputs(spec)
    others = [n for n, d in spec.inputs.items() if d.required and n not in media[:1]]
    if len(media) != 1 or others:
        raise BatchInputError(
            f"A directory of media files ({folder}) feeds a flow with exactly one media input "
            f"and no other required input; flow {spec.name!r} takes {_describe_inputs(spec)}. "
            "Give a .jsonl or .csv file of inputs instead.",
            path=str(folder),
        )
    return _directory_files(folder, media[0], _MEDIA_SUFFIXES[spec.inputs[media[0]].type])


def _directory_files(folder: Path, name: str, suffixes: tuple[str, ...]) -> Iterator[Item]:
    # Names only (small), sorted so the order is stable; files are opened by the runs.
    entries = sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(suffixes)
    )
    for file_name in entries:
        inputs = {name: str((folder / file_name).absolute())}
        yield Item(item_id(inputs, [name]), inputs, str(folder / file_name))


def _mapping_items(values: Iterable[Mapping[str, Any] | Item], spec: FlowSpec) -> Iterator[Item]:
    for index, value in enumerate(values, start=1):
        if isinstance(value, Item):
            yield value
            continue
        if not isinstance(value, Mapping):
            raise BatchInputError(
                f"item {index}: a batch item is a mapping of flow inputs, not "
                f"{type(value).__name__}."
            )
        yield _make_item(dict(value), spec, where=f"item {index}", base=None, path=None, line=index)


def count_items(source: str | Path | Iterable[Any]) -> int | None:
    """How many items ``source`` holds, by a quick streaming pass (None if unknown)."""
    if isinstance(source, list | tuple):
        return len(source)
    if not isinstance(source, str | Path):
        return None
    path = Path(source)
    try:
        if path.is_dir():
            known = tuple(x for suffixes in _MEDIA_SUFFIXES.values() for x in suffixes)
            return sum(
                1
                for e in os.scandir(path)
                if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(known)
            )
        suffix = path.suffix.lower()
        with path.open(encoding="utf-8-sig", newline="") as fh:
            if suffix in (".csv", ".tsv"):
                reader = csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                return max(sum(1 for row in reader if any(c.strip() for c in row)) - 1, 0)
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None
