"""Node params where people look (issue 24, item 6): `calliope-graph nodes KIND`, templates
that work with `{{…}}` by default, and an inline model in the README's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from calliope_graph.cli import main
from calliope_graph.context import RunContext
from calliope_graph.errors import FlowSpecError
from calliope_graph.flow import Flow, load_spec
from calliope_graph.nodes import PromptTemplate, node_kinds, param_docs


def test_nodes_kind_shows_ports_and_params_with_type_default_allowed_and_example() -> None:
    result = CliRunner().invoke(main, ["nodes", "text_to_image"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("prompt: text", "image: image", "params:", "width: integer", "≤ 8192"):
        assert text in out, text
    assert "e.g.  width: 1024" in out and "providers: openai" in out
    speech = CliRunner().invoke(main, ["nodes", "text_to_speech"]).stdout
    assert "allowed: mp3, opus, aac, flac, wav, pcm" in speech  # a Literal's values
    video = CliRunner().invoke(main, ["nodes", "assemble_video"]).stdout
    assert "fps: integer; ≥ 1, ≤ 120; default 24" in video  # a default


def test_every_kind_documents_every_param_of_its_own_model() -> None:
    """No second table: the rows are the Params model's fields, each with an example that
    the model itself accepts."""
    for kind, cls in node_kinds().items():
        docs = param_docs(cls)
        assert [d.name for d in docs] == [
            f.alias or n for n, f in cls.Params.model_fields.items()
        ], kind
        result = CliRunner().invoke(main, ["nodes", kind, "--json"])
        assert result.exit_code == 0, (kind, result.output)
        shown = json.loads(result.stdout)
        assert [p["name"] for p in shown["params"]] == [d.name for d in docs]
        for doc in docs:
            if doc.allowed:
                assert doc.example in doc.allowed, (kind, doc.name)


def test_nodes_without_kind_still_lists_every_kind_and_an_unknown_kind_names_them() -> None:
    listing = CliRunner().invoke(main, ["nodes"])
    assert listing.exit_code == 0 and "text_to_image" in listing.stdout
    assert "calliope-graph nodes KIND" in listing.stdout
    wrong = CliRunner().invoke(main, ["nodes", "text_to_imag"])
    assert wrong.exit_code == 2
    assert "'text_to_imag' is not a node kind" in wrong.stderr
    assert "text_to_image" in wrong.stderr and "prompt_template" in wrong.stderr


# -- templates: {{…}} works without template_format ------------------------------------------
@pytest.mark.parametrize(
    ("template", "detected", "variables"),
    [
        ("A picture of {{story.title}} in {{style}}", "mustache", ["story", "style"]),
        ("{{#scenes}}{{text}} {{/scenes}}", "mustache", ["scenes"]),
        ("A picture of {title} in {style}", "f-string", ["style", "title"]),
        ('Answer as JSON {{"mood": "calm"}} about {topic}', "f-string", ["topic"]),
        ("{topic} and a literal {{brace}}", "f-string", ["topic"]),  # mixed: f-string escapes
        ("no variables at all", "f-string", []),
    ],
)
def test_the_template_format_is_detected(
    template: str, detected: str, variables: list[str]
) -> None:
    node = PromptTemplate(template=template)
    assert node.params.template_format == detected
    assert node.variables == variables


def test_a_set_template_format_is_kept() -> None:
    node = PromptTemplate(template="{{x}}", template_format="f-string")
    assert node.params.template_format == "f-string" and node.variables == []


async def test_a_mustache_template_renders_fields_without_template_format(ctx: RunContext) -> None:
    node = PromptTemplate(template="{{story.title}}: {{story.mood}}")
    out = await node.run(ctx, story={"title": "The fox", "mood": "calm"})
    assert out == {"text": "The fox: calm"}
    chat = PromptTemplate(messages=[("system", "Be brief."), ("user", "About {{topic}}")])
    messages = (await chat.run(ctx, topic="a fox"))["messages"]
    assert messages[-1].content == "About a fox"


def test_a_template_field_is_checked_against_the_schema_without_template_format(
    tmp_path: Path,
) -> None:
    text = """
name: titled
inputs:
  messages: {type: messages}
nodes:
  story:
    kind: messages_to_object
    params:
      schema: {type: object, properties: {title: {type: string}}, required: [title]}
    inputs: {messages: inputs.messages}
  line:
    kind: prompt_template
    params: {template: "The story {{story.subtitle}}"}
    inputs: {story: story.object}
outputs:
  text: line.text
"""
    path = tmp_path / "titled.yaml"
    path.write_text(text)
    with pytest.raises(FlowSpecError, match=r"template variable 'story\.subtitle'"):
        Flow.load(str(path)).validate()


# -- an inline model --------------------------------------------------------------------------
README_SHAPE = """
name: local_draft
inputs:
  text: {type: text}
nodes:
  draft:
    kind: text_to_text
    model:
      description: Llama 3.2 on a local Ollama
      model_parameters: {temperature: 0.8, max_tokens: 400}
      model: {slug: local-llama, provider: openai, provider_model_name: llama3.2,
              provider_api_variant: openai_chat_completion,
              base_url: "http://localhost:11434/v1"}
    inputs: {text: inputs.text}
  polish:
    kind: text_to_text
    model: {provider: openai, provider_model_name: gpt-6-luna,
            model_parameters: {temperature: 0.2}}
    inputs: {text: draft.text}
outputs:
  text: polish.text
"""


def test_an_inline_model_in_the_readme_shape_is_accepted() -> None:
    spec = load_spec("local_draft.yaml", text=README_SHAPE)
    draft = spec.nodes["draft"].model
    polish = spec.nodes["polish"].model
    assert not isinstance(draft, str) and draft is not None
    assert draft.slug == "local-llama" and draft.model.base_url == "http://localhost:11434/v1"
    assert draft.parameters == {"temperature": 0.8, "max_tokens": 400}
    assert not isinstance(polish, str) and polish is not None
    assert polish.slug == "gpt-6-luna" and polish.parameters == {"temperature": 0.2}
    Flow.from_spec(spec).validate()


async def test_an_inline_model_runs_under_the_simulator(tmp_path: Path) -> None:
    from calliope_graph.simulate import Simulator

    text = README_SHAPE.replace(
        ',\n              base_url: "http://localhost:11434/v1"}', "}"
    )  # the simulator serves OpenAI's own host
    flow = Flow.from_spec(load_spec("local_draft.yaml", text=text))
    result = await flow.ainvoke({"text": "a fox"}, out_dir=tmp_path, simulator=Simulator())
    assert result.outputs["text"]
    assert [e.model for e in result.trace.executions] == ["local-llama", "gpt-6-luna"]


def test_a_wrong_inline_model_says_what_is_wrong_and_the_shape() -> None:
    text = README_SHAPE.replace("provider: openai, provider_model_name: gpt-6-luna", "x: 1")
    with pytest.raises(FlowSpecError) as info:
        load_spec("local_draft.yaml", text=text)
    message = str(info.value)
    assert "valid string" not in message
    assert "provider" in message and "provider_model_name" in message and "line 17" in message
    assert "unknown field(s) x" in message and "Value error" not in message


# -- sizes a model cannot make ----------------------------------------------------------------
def sized_flow(model: str, width: int, height: int) -> str:
    return f"""
name: sized
inputs:
  text: {{type: text}}
nodes:
  image:
    kind: text_to_image
    model: {model}
    params: {{width: {width}, height: {height}}}
    inputs: {{prompt: inputs.text}}
outputs:
  image: image.image
"""


def test_a_size_a_fixed_size_model_cannot_make_is_refused_at_validation() -> None:
    spec = load_spec("sized.yaml", text=sized_flow("openai-gpt-image-2", 512, 512))
    with pytest.raises(FlowSpecError) as info:
        Flow.from_spec(spec).validate()
    message = str(info.value)
    assert "1024x1024, 1536x1024, 1024x1536" in message and "not 512x512" in message
    assert "nearest: width: 1024, height: 1024" in message and "line 9" in message
    wide = load_spec("sized.yaml", text=sized_flow("openai-gpt-image-2", 1600, 1000))
    with pytest.raises(FlowSpecError, match="nearest: width: 1536, height: 1024"):
        Flow.from_spec(wide).validate()
    for ok in (
        sized_flow("openai-gpt-image-2", 1536, 1024),
        sized_flow("stability-core", 512, 512),
    ):
        Flow.from_spec(load_spec("sized.yaml", text=ok)).validate()


async def test_an_image_of_another_size_than_asked_is_warned_about(
    ctx: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    from calliope_graph.nodes import TextToImage

    caplog.set_level("WARNING", logger="calliope_graph.nodes.text_to_image")
    made = (
        await TextToImage("openai-gpt-image-2", width=512, height=512).run(ctx, prompt="a fox")
    )["image"]
    assert (made.width, made.height) == (1024, 1024)  # what the model makes, as before
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert "asked for 512x512" in warned[0] and "made 1024x1024" in warned[0]
    assert "only 1024x1024, 1536x1024, 1024x1536" in warned[0]
    caplog.clear()
    await TextToImage("openai-gpt-image-2", width=1024, height=1024).run(ctx, prompt="a fox")
    assert not caplog.records  # the size asked: nothing to say
