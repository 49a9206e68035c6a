"""The trace of composed flows says what happened: the item inside a mapped subflow, the
real cause of a failed map item, and which pass of a rewrite loop each execution was."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_composition import run, sim

from calliope_graph.errors import FlowRunError
from calliope_graph.flow import Flow, Trace

REFUSED = "content_policy@stability;content_policy@openai:endpoint=images"


def test_executions_inside_a_mapped_subflow_record_their_item(tmp_path: Path) -> None:
    result = run(Flow.load("storyboard"), {"premise": "a fox"}, tmp_path, sim())
    inside = [e for e in result.trace.executions if "]/" in e.node]
    assert inside
    for e in inside:
        index = int(e.node.split("[", 1)[1].split("]", 1)[0])
        assert e.item == index, (e.node, e.item)


def test_a_failed_map_item_records_its_real_cause(tmp_path: Path) -> None:
    with pytest.raises(FlowRunError) as info:
        run(Flow.load("storyboard"), {"premise": "a fox"}, tmp_path, sim(REFUSED))
    assert info.value.cause_class == "content_policy"
    trace = Trace.load(tmp_path / "trace.json")
    items = [e for e in trace.executions if e.node == "scenes"]
    assert items and all(e.status == "failed" for e in items)
    assert {e.error_class for e in items} == {"content_policy"}
    assert {e.error_class for e in trace.executions if e.status == "failed"} == {"content_policy"}


def test_each_pass_of_a_rewrite_loop_is_labelled_with_its_iteration(tmp_path: Path) -> None:
    with pytest.raises(FlowRunError):
        run(Flow.load("storyboard"), {"premise": "a fox"}, tmp_path, sim(REFUSED))
    trace = Trace.load(tmp_path / "trace.json")
    censor = [e for e in trace.executions if e.node == "scenes[0]/illustration/censor"]
    image = [e for e in trace.executions if e.node == "scenes[0]/illustration/image"]
    assert [e.iteration for e in image] == [1, 2, 3, 4]  # the first try, then 3 rewrites
    assert [e.iteration for e in censor] == [1, 2, 3]  # the rewriter's 1st, 2nd, 3rd pass
