"""Choose: one item of a list (a candidates node's results) by rule, judge or person.

``params: {by: first_ok | rule | judge | human}``:

- ``first_ok`` (default): the first candidate that is not missing (a candidate dropped by a
  ``continue`` route is ``None`` in the list).
- ``rule``: the first candidate for which the JMESPath expression ``rule`` holds (the
  switch node's evaluation: objects as dicts, analyses with their fields).
- ``judge``: a chat model (``model``; structured output) scores every candidate 0–10
  against ``criteria`` with a reason; the best wins (the first of equals). The scores are an
  output (``scores``), so the trace and the report show them.
- ``human``: the run pauses on a LangGraph interrupt and resumes with the choice.

``rule`` and ``judge`` look at ``views`` when it is wired — a list parallel to the
candidates, e.g. the analyses of candidate images (``analyze_image`` mapped over them) —
and otherwise at the candidates themselves (a judge sees pictures inline, so give it a
vision chat model for them; text, objects and analyses as text; other media by file
name). The index always picks from ``candidates``.

**The interrupt payload** (``by: human``) is
``{"node": <node name>, "candidates": [<summary>...], "resume": <how to answer>}`` where a
summary is the candidate's text, an object or analysis as JSON, a media file's path, or
``None`` for a missing candidate. The resume value (``Command(resume=...)``) is the chosen
index (an int, or its decimal string) or a dict ``{<node name>: <index>}``; an index out of
range or naming a missing candidate is a ConfigurationError naming the valid ones.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from calliope_graph._messages import as_messages
from calliope_graph.config import ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import ConfigurationError
from calliope_graph.media import Audio, Image, ImageAnalysis, ImageLimits, Video, prepared
from calliope_graph.nodes._base import Node, Port, PortType, register_node
from calliope_graph.nodes.switch import to_query_value

__all__ = ["Choose", "ChooseParams", "candidate_summary", "resume_index"]


class ChooseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    by: Literal["first_ok", "rule", "judge", "human"] = "first_ok"
    """How the one is chosen: the first that succeeded, a rule, a judge model, or a person."""
    rule: str | None = Field(default=None, examples=["mood == 'calm'"])
    """``by: rule``: a JMESPath expression over each candidate (or its view)."""
    criteria: str | None = Field(default=None, examples=["the clearest picture of the fox"])
    """``by: judge``: what the judge scores the candidates against."""

    @field_validator("rule")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                jmespath.compile(value)
            except JMESPathError as exc:
                raise ValueError(f"invalid JMESPath expression {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> ChooseParams:
        if self.by == "rule" and not self.rule:
            raise ValueError("by: rule needs 'rule' (a JMESPath expression: \"mood == 'calm'\")")
        if self.by == "judge" and not self.criteria:
            raise ValueError("by: judge needs 'criteria' (what makes a candidate good)")
        return self


#: How a candidate picture is sent to a judge (inline, as every vision chat engine reads it).
JUDGE_IMAGE_LIMITS = ImageLimits(
    "judge", max_side=1024, max_bytes=4 * 1024 * 1024, measure="base64"
)


class _Score(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=10, description="0 (fails the criteria) to 10 (fits them best)")
    reason: str = Field(description="one sentence: why this score")


def candidate_summary(value: Any) -> Any:
    """What a person or a judge is shown of a candidate: text, JSON-able data, a media
    file's path, or None."""
    if isinstance(value, Image | Audio | Video):
        return str(value.path)
    if isinstance(value, ImageAnalysis | BaseModel):
        return to_query_value(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return to_query_value(value) if isinstance(value, list | tuple | dict) else repr(value)


def resume_index(node: str, value: Any, count: int, present: list[bool]) -> int:
    """The index a resume value chooses (an int, its string, or ``{node: index}``)."""
    if isinstance(value, dict):
        if node not in value:
            raise ConfigurationError(
                f"Choose {node!r}: the resume value names {sorted(map(str, value))}, not "
                f"{node!r}: answer {{{node!r}: <index>}}."
            )
        value = value[node]
    try:
        index = int(value)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
    except (TypeError, ValueError):
        index = -1
    valid = [i for i in range(count) if present[i]]
    if index not in valid:
        raise ConfigurationError(
            f"Choose {node!r}: {value!r} is not a candidate to choose: give an index from 0 "
            f"to {count - 1}" + (f" (present: {valid})" if len(valid) < count else "") + "."
        )
    return index


@register_node
class Choose(Node):
    kind = "choose"
    description = "Pick one item of a list: the first ok, by a rule, by a judge model, or a person"
    conversion = Conversion.MESSAGES_TO_OBJECT  # only with by: judge (then it needs a model)
    Params = ChooseParams
    inputs = (
        Port("candidates", PortType.ANY, is_list=True, description="the list to choose from"),
        Port(
            "views",
            PortType.ANY,
            required=False,
            is_list=True,
            description="what rule and judge look at, one per candidate (e.g. analyses)",
        ),
    )
    outputs = (
        Port("item", PortType.ANY, description="the chosen candidate"),
        Port("index", PortType.ANY, description="its index in the list (0-based)"),
        Port("scores", PortType.ANY, description="by: judge: each candidate's score and reason"),
    )

    def __init__(
        self, model: ModelConfig | str | None = None, *, name: str | None = None, **params: Any
    ) -> None:
        super().__init__(model, name=name, **params)
        if self.params.by == "judge" and self.model is None:
            raise ConfigurationError(
                f"Node {self.name!r} (choose): by: judge needs a model (a chat model, e.g. "
                "model: openai-gpt-6-luna)."
            )
        if self.params.by != "judge" and self.model is not None:
            raise ConfigurationError(
                f"Node {self.name!r} (choose): only by: judge uses a model; remove 'model'."
            )

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        items = list(inputs.get("candidates") or [])
        if not items:
            raise ConfigurationError(f"Choose {self.name!r}: there are no candidates.")
        views = inputs.get("views")
        views = list(views) if views is not None else items
        if len(views) != len(items):
            raise ConfigurationError(
                f"Choose {self.name!r}: {len(views)} views for {len(items)} candidates: wire "
                "one view per candidate (map the view's node over the candidates)."
            )
        present = [item is not None for item in items]
        if not any(present):
            raise ConfigurationError(f"Choose {self.name!r}: every candidate failed.")
        by, scores = self.params.by, None
        if by == "first_ok":
            index = present.index(True)
        elif by == "rule":
            index = self._by_rule(views, present)
        elif by == "judge":
            scores = await self._judged(ctx, views, present)
            judged = scores
            index = max(
                (i for i in range(len(items)) if present[i]),
                key=lambda i: (judged[i]["score"], -i),
            )
        else:
            index = self._by_person(items, present)
        return {"item": items[index], "index": index, "scores": scores}

    def _by_rule(self, views: list[Any], present: list[bool]) -> int:
        assert self.params.rule is not None
        expression = jmespath.compile(self.params.rule)
        for index, view in enumerate(views):
            if not present[index]:
                continue
            try:
                result = expression.search(to_query_value(view))
            except JMESPathError as exc:
                raise ConfigurationError(
                    f"Choose {self.name!r}: rule {self.params.rule!r} failed on candidate "
                    f"{index}: {exc}"
                ) from None
            if result not in (None, False, "", [], {}):
                return index
        raise ConfigurationError(
            f"Choose {self.name!r}: rule {self.params.rule!r} holds for no candidate."
        )

    async def _judged(
        self, ctx: RunContext, views: list[Any], present: list[bool]
    ) -> list[dict[str, Any]]:
        shown = [i for i in range(len(views)) if present[i]]
        fields: dict[str, Any] = {f"candidate_{i}": (_Score, ...) for i in shown}
        schema = create_model("CandidateScores", __config__=ConfigDict(extra="forbid"), **fields)
        parts: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": "Score each candidate from 0 to 10 against these criteria, with a "
                f"one-sentence reason.\nCriteria: {self.params.criteria}",
            }
        ]
        for i in shown:
            view = views[i]
            if isinstance(view, Image):  # a vision model sees the picture itself
                sent = await prepared(view, JUDGE_IMAGE_LIMITS)
                parts.append({"type": "text", "text": f"Candidate {i}:"})
                parts.append({"type": "image_url", "image_url": {"url": sent.data_url()}})
            else:
                text = _as_text(candidate_summary(view))
                parts.append({"type": "text", "text": f"Candidate {i}:\n{text}"})
        config = self.model_config_for(ctx)
        engine = get_engine(Conversion.MESSAGES_TO_OBJECT, config.provider)
        messages = as_messages([{"role": "user", "content": parts}])
        answer = await engine(ctx, messages, config, schema)
        scores = [{"index": i, "score": 0, "reason": "missing"} for i in range(len(views))]
        for i in shown:
            score: _Score = getattr(answer, f"candidate_{i}")
            scores[i] = {"index": i, "score": score.score, "reason": score.reason}
        return scores

    def _by_person(self, items: list[Any], present: list[bool]) -> int:
        from langgraph.types import interrupt  # only a paused run needs LangGraph here

        answer = interrupt(
            {
                "node": self.name,
                "candidates": [candidate_summary(item) for item in items],
                "resume": f"resume with the chosen index, or {{{self.name!r}: <index>}}",
            }
        )
        return resume_index(self.name, answer, len(items), present)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
