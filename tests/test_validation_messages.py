"""Validation: a flow that cannot run is refused by ``validate``, and every message says
where (the file and the line), for whatever part of a flow is wrong."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from calliope_graph.cli import main
from calliope_graph.errors import CalliopeError, FlowSpecError
from calliope_graph.flow import Flow

ROOT = Path(__file__).resolve().parent.parent

MUTUAL = """\
name: mutual
inputs:
  text: {type: text}
nodes:
  a:
    kind: censor_text
    model: openai-gpt-6-luna
    on_error:
      - when: [content_policy]
        rewrite: {via: b, port: text, max_attempts: 2}
  b:
    kind: censor_text
    model: openai-gpt-6-luna
    on_error:
      - when: [content_policy]
        rewrite: {via: a, port: text, max_attempts: 2}
outputs:
  text: a.text
"""


def test_two_nodes_that_rewrite_via_each_other_are_refused_by_validate(tmp_path: Path) -> None:
    path = tmp_path / "mutual.yaml"
    path.write_text(MUTUAL)
    with pytest.raises(FlowSpecError) as info:
        Flow.load(path).validate()
    message = str(info.value)
    assert f"{path}, line 8:" in message
    assert "'a' rewrites via 'b'" in message and "'b' rewrites via 'a'" in message
    assert "nothing ever starts" in message
    # and from the CLI: exit 3 naming the file, not LangGraph's "must have an entrypoint"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 3, result.output
    assert "rewrites via" in result.output and "entrypoint" not in result.output


def test_a_rewriter_reached_from_a_node_that_starts_is_still_valid(tmp_path: Path) -> None:
    # the shipped illustrate flow: image rewrites via censor, which nothing else routes to
    Flow.load("illustrate").validate()


# -- every message names the file and a line ---------------------------------------------------
BAD: list[Any] = ["nope.text", "inputs.nope", "", 12345, {"x": 1}, None]


def _mutations(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The flow with one thing wrong: each field of each node removed or given a bad value
    (one level down too), an unknown kind, a bad flow output."""

    def changed(path: tuple[Any, ...], value: Any = ..., *, delete: bool = False) -> Any:
        out = copy.deepcopy(doc)
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        return out

    for name, node in doc["nodes"].items():
        yield changed(("nodes", name, "kind"), "no_such_kind")
        for key, value in node.items():
            yield changed(("nodes", name, key), delete=True)
            for bad in BAD:
                yield changed(("nodes", name, key), bad)
            if isinstance(value, dict):
                for sub in value:
                    yield changed(("nodes", name, key, sub), delete=True)
                    for bad in BAD:
                        yield changed(("nodes", name, key, sub), bad)
                yield changed(("nodes", name, key, "bogus"), 1)
    for out in doc.get("outputs", {}):
        for bad in BAD:
            yield changed(("outputs", out), bad)


@pytest.mark.parametrize("shipped", ["storyboard", "illustrate", "structured_scene"])
def test_every_validation_message_names_the_file_and_a_line(tmp_path: Path, shipped: str) -> None:
    doc = yaml.safe_load((ROOT / "graphs" / f"{shipped}.yaml").read_text())
    unlocated: list[str] = []
    refused = 0
    for index, bad in enumerate(_mutations(doc)):
        path = tmp_path / f"{shipped}_{index}.yaml"
        path.write_text(yaml.safe_dump(bad, sort_keys=False))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Flow.load(path).validate()
        except CalliopeError as exc:  # anything else is a traceback: the test fails on it
            refused += 1
            message = str(exc)
            if str(path) not in message or not re.search(r", line \d+", message):
                unlocated.append(f"{type(exc).__name__}: {message}")
    assert refused > 50  # the walk did find bad flows
    assert unlocated == []
