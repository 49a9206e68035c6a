"""Model lifecycles as a user meets them: retired models refused, soon-retiring ones warned
about once, `calliope-graph models` (and `--check`), the simulator answering retired models
as each provider does, and a model served by a local OpenAI-compatible server (Ollama)."""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from click.testing import CliRunner, Result

from calliope_graph import lifecycle
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.config import KeysModel, ModelCatalog, catalog
from calliope_graph.context import RunContext
from calliope_graph.engines import anthropic as anthropic_engine
from calliope_graph.errors import ConfigurationError
from calliope_graph.flow import Flow, load_spec, shipped_flows
from calliope_graph.lifecycle import ModelLifecycleWarning, status
from calliope_graph.model_list import JSON_KEYS, is_listed
from calliope_graph.nodes import node_kinds
from calliope_graph.simulate import Simulator
from calliope_graph.simulate.server import SimulatorServer

ROOT = Path(__file__).resolve().parent.parent
EXIT_MODELS_MISSING = 7

#: openai-gpt-4o shuts down 2027-01-14: 39 days after the suite's pinned day (conftest).
SOON = """\
name: soon
inputs:
  text: {type: text}
nodes:
  story:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: inputs.text}
  again:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: story.text}
outputs:
  text: again.text
"""

RETIRED = """\
name: retired
inputs:
  text: {type: text}
nodes:
  picture:
    kind: text_to_image
    model: openai-dall-e-3
    inputs: {prompt: inputs.text}
outputs:
  image: picture.image
"""


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Each test sees lifecycle warnings afresh (they are given once per process)."""
    lifecycle._SHOWN.clear()
    yield
    lifecycle._SHOWN.clear()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def lifecycle_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "shuts down on" in line]


# -- refusing and warning ----------------------------------------------------------------
def test_a_flow_naming_a_retired_model_fails_validate_with_exit_4_naming_its_replacement(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "retired.yaml"
    flow.write_text(RETIRED)
    result = cli("validate", str(flow))
    assert result.exit_code == EXIT_CODES["configuration"] == 4
    assert "openai-dall-e-3" in result.stderr and "2026-05-12" in result.stderr
    assert "use 'openai-gpt-image-2' instead" in result.stderr
    with pytest.raises(ConfigurationError, match=r"shut down .* 'openai-gpt-image-2'"):
        Flow.load(flow).validate()


def test_a_model_shutting_down_within_90_days_warns_once_on_one_line_in_validate(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "soon.yaml"
    flow.write_text(SOON)
    result = cli("validate", str(flow))
    assert result.exit_code == 0, result.output
    (line,) = lifecycle_lines(result.stderr)  # two nodes share the model: one line
    assert line.startswith("warning: model 'openai-gpt-4o'")
    assert "2027-01-14" in line and "use 'openai-gpt-6-luna' instead" in line


def test_run_and_batch_warn_once_too(tmp_path: Path) -> None:
    flow = tmp_path / "soon.yaml"
    flow.write_text(SOON)
    run = cli("run", str(flow), "-i", "text=a fox", "--simulate", "--out", str(tmp_path / "o"))
    assert run.exit_code == 0, run.output
    assert len(lifecycle_lines(run.stderr)) == 1
    lifecycle._SHOWN.clear()  # a new process would start afresh
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"id": "a", "text": "a fox"}\n{"id": "b", "text": "an owl"}\n')
    batch = cli(
        "batch", str(flow), "--inputs", str(inputs), "--out", str(tmp_path / "b"), "--simulate"
    )
    assert batch.exit_code == 0, batch.output
    assert len(lifecycle_lines(batch.stderr)) == 1


def test_flow_validate_in_python_warns_once_with_a_one_line_message(tmp_path: Path) -> None:
    flow = tmp_path / "soon.yaml"
    flow.write_text(SOON)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        Flow.load(flow).validate()
        Flow.load(flow).validate()  # loading again does not repeat it
    found = [w for w in caught if issubclass(w.category, ModelLifecycleWarning)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "\n" not in message and "2027-01-14" in message and "openai-gpt-6-luna" in message


def test_a_model_far_from_shutdown_or_current_does_not_warn(tmp_path: Path) -> None:
    later = lifecycle.today() + timedelta(days=91)
    extra = tmp_path / "models.yaml"
    extra.write_text(
        "later-model:\n"
        "  model: {slug: later-model, provider: openai, provider_model_name: gpt-later,\n"
        f"          shutdown_on: {later.isoformat()}, replacement: openai-gpt-6-luna}}\n"
    )
    flow = tmp_path / "f.yaml"
    flow.write_text(
        SOON.replace("openai-gpt-4o", "later-model").replace(
            "inputs:\n", "catalog: models.yaml\ninputs:\n", 1
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        Flow.load(flow).validate()
    assert not [w for w in caught if issubclass(w.category, ModelLifecycleWarning)]


def test_calliope_today_moves_the_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flow = tmp_path / "soon.yaml"
    flow.write_text(SOON)
    monkeypatch.setenv("CALLIOPE_TODAY", "2027-01-14")
    result = cli("validate", str(flow))
    assert result.exit_code == 4 and "use 'openai-gpt-6-luna' instead" in result.stderr
    monkeypatch.setenv("CALLIOPE_TODAY", "soon")
    with pytest.raises(ConfigurationError, match="YYYY-MM-DD"):
        lifecycle.today()


# -- nothing shipped warns ---------------------------------------------------------------
def _names_in(text: str) -> set[str]:
    return {name for name in catalog if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text)}


def test_nothing_shipped_uses_a_model_that_is_not_current_today() -> None:
    used: dict[str, str] = {}
    for name in shipped_flows():
        text = (ROOT / "graphs" / f"{name}.yaml").read_text()
        spec = load_spec(f"{name}.yaml", text=text)
        for node, node_spec in spec.nodes.items():
            model = node_spec.model
            if isinstance(model, str):
                used[model] = f"graphs/{name}.yaml node {node}"
    for path in [*(ROOT / "examples").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        used.update(dict.fromkeys(_names_in(path.read_text()), str(path.relative_to(ROOT))))
    for path in (ROOT / "calliope_graph" / "inference.py", ROOT / "README.md"):
        used.update(dict.fromkeys(_names_in(path.read_text()), str(path.relative_to(ROOT))))
    for kind, cls in node_kinds().items():
        if cls.default_model is not None:
            used[cls.default_model] = f"default model of node kind {kind}"
    assert used, "found no model names: the walk is broken"
    today = lifecycle.today()
    # README deliberately names retired models when it explains lifecycles.
    allowed_in_docs = {"openai-dall-e-3", "openai-gpt-4o", "google-imagen-4"}
    bad = {
        name: (where, status(catalog.get(name).model, today))
        for name, where in used.items()
        if status(catalog.get(name).model, today) != "current"
        and not (where == "README.md" and name in allowed_in_docs)
    }
    assert not bad, bad
    # every replacement the catalog names exists and is current
    for name, config in catalog.items():
        if config.model.replacement:
            assert status(catalog.get(config.model.replacement).model, today) == "current", name


# -- calliope-graph models -----------------------------------------------------------------
def test_models_json_lists_every_model_with_exactly_the_keys() -> None:
    result = cli("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert sorted(row["name"] for row in rows) == sorted(catalog)
    for row in rows:
        assert tuple(row) == JSON_KEYS
        assert row["status"] in ("current", "deprecated", "retired")
    by_name = {row["name"]: row for row in rows}
    dalle = by_name["openai-dall-e-3"]
    assert dalle["status"] == "retired" and dalle["shutdown_on"] == "2026-05-12"
    assert dalle["replacement"] == "openai-gpt-image-2" and dalle["kinds"] == ["text_to_image"]
    assert by_name["openai-tts-1"]["kinds"] == ["text_to_speech"]  # narrowed by the catalog
    assert "text_to_text" in by_name["anthropic-claude-sonnet"]["kinds"]
    assert by_name["openai-gpt-6-luna"]["price"]["input_per_1k_tokens"] == 0.0001


def test_models_filters_and_refuses_bad_filters_listing_the_valid_ones() -> None:
    rows = json.loads(cli("models", "--json", "--provider", "elevenlabs").stdout)
    assert rows and {row["provider"] for row in rows} == {"elevenlabs"}
    rows = json.loads(cli("models", "--json", "--kind", "audio_to_text").stdout)
    assert rows and all("audio_to_text" in row["kinds"] for row in rows)
    bad = cli("models", "--provider", "openia")
    assert bad.exit_code == EXIT_CODES["usage"] and "anthropic" in bad.stderr
    bad = cli("models", "--kind", "paint")
    assert bad.exit_code == EXIT_CODES["usage"] and "text_to_image" in bad.stderr
    table = cli("models")
    assert table.exit_code == 0 and "openai-gpt-6-luna" in table.stdout


def test_models_check_simulate_passes_with_the_shipped_catalog() -> None:
    result = cli("models", "--check", "--simulate")
    assert result.exit_code == 0, result.output
    assert "azure_vision: skipped, no list endpoint" in result.stdout
    assert "stability: skipped, no list of its v2beta models" in result.stdout
    assert "retired as the catalog says: openai-dall-e-2, openai-dall-e-3" in result.stdout


def test_models_check_reports_a_catalog_model_the_provider_no_longer_lists(
    tmp_path: Path,
) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "my-old-gpt:\n"
        "  model: {slug: my-old-gpt, provider: openai, provider_model_name: gpt-4-32k}\n"
    )
    result = cli("models", "--check", "--simulate", "--catalog", str(extra))
    assert result.exit_code == EXIT_MODELS_MISSING, result.output
    assert "NOT LISTED (catalog models): my-old-gpt" in result.stdout
    data = json.loads(
        cli("models", "--check", "--simulate", "--json", "--catalog", str(extra)).stdout
    )
    assert data["missing"] == ["my-old-gpt"] and data["exit_code"] == EXIT_MODELS_MISSING


def test_models_check_without_keys_says_which_providers_it_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ELEVENLABS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    result = cli("models", "--check", "--provider", "openai")
    assert result.exit_code == 0
    assert "openai: skipped, no key (set OPENAI_API_KEY)" in result.stdout


async def test_anthropic_model_list_follows_pages(tmp_path: Path) -> None:
    pages = {
        None: {"data": [{"id": "claude-a"}], "has_more": True, "last_id": "claude-a"},
        "claude-a": {"data": [{"id": "claude-b"}], "has_more": False, "last_id": "claude-b"},
    }
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after_id")
        seen.append(after)
        return httpx.Response(200, json=pages[after])

    ctx = RunContext.create(
        tmp_path, keys=KeysModel(anthropic_api_key="k"), transport=httpx.MockTransport(handler)
    )
    assert await anthropic_engine.list_models(ctx) == ["claude-a", "claude-b"]
    assert seen == [None, "claude-a"]
    await ctx.client.aclose()


def test_a_dated_snapshot_lists_its_alias_but_a_newer_model_does_not() -> None:
    assert is_listed("claude-haiku-4-5", ["claude-haiku-4-5-20251001"])
    assert not is_listed("claude-sonnet-5", ["claude-sonnet-5-5"])


# -- the simulator answers retired models as the providers do ----------------------------
async def test_the_simulated_openai_refuses_a_retired_model_with_its_404() -> None:
    sim = Simulator()
    keys = sim.keys()
    async with sim.client() as client:
        answer = await client.post(
            f"{keys.base_url('openai')}/images/generations",
            json={"model": "dall-e-3", "prompt": "a kite"},
            headers={"Authorization": f"Bearer {sim.key_for('openai')}"},
        )
        current = await client.post(
            f"{keys.base_url('openai')}/images/generations",
            json={"model": "gpt-image-2", "prompt": "a kite", "size": "1024x1024"},
            headers={"Authorization": f"Bearer {sim.key_for('openai')}"},
        )
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert "`dall-e-3` has been deprecated" in error["message"]
    assert current.status_code == 200


async def test_the_simulated_anthropic_refuses_a_retired_model_as_the_sdk_sees_it() -> None:
    sim = Simulator()
    async with SimulatorServer(sim) as server:
        client = anthropic.AsyncAnthropic(
            api_key=sim.key_for("anthropic"),
            base_url=server.base_urls()["anthropic"],
            max_retries=0,
        )
        with pytest.raises(anthropic.NotFoundError) as info:
            await client.messages.create(
                model="claude-3-5-haiku-20241022",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            )
        assert info.value.status_code == 404
        assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        page = await client.models.list()
        assert "claude-sonnet-5" in [m.id for m in page.data]
        await client.close()


# -- a model on your own machine (Ollama, vLLM, llama.cpp) ------------------------------
class ChatServer:
    """A loopback server speaking the OpenAI chat-completions wire format, as Ollama does
    (``/v1/chat/completions``, no key needed): records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
        self.requests.append((headers, body))
        answer = json.dumps(
            {
                "id": "chatcmpl-local",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "A local llama wrote this."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            }
        ).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def ollama() -> AsyncIterator[ChatServer]:
    server = ChatServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = int(listener.sockets[0].getsockname()[1])
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_model_with_its_own_base_url_is_served_there_beside_openai(
    ollama: ChatServer, tmp_path: Path
) -> None:
    (tmp_path / "models.yaml").write_text(
        "local-llama:\n"
        "  description: Llama 3.2 on a local Ollama\n"
        "  model: {slug: local-llama, provider: openai, provider_model_name: llama3.2,\n"
        "          provider_api_variant: openai_chat_completion,\n"
        f"          base_url: 'http://127.0.0.1:{ollama.port}/v1'}}\n"
    )
    (tmp_path / "flow.yaml").write_text(
        "name: mixed\ncatalog: models.yaml\ninputs:\n  text: {type: text}\n"
        "nodes:\n"
        "  draft: {kind: text_to_text, model: local-llama, inputs: {text: inputs.text}}\n"
        "  polish: {kind: text_to_text, model: openai-gpt-6-luna, inputs: {text: draft.text}}\n"
        "outputs:\n  draft: draft.text\n  text: polish.text\n"
    )
    sim = Simulator()
    async with SimulatorServer(sim) as server:
        keys = KeysModel(
            openai_api_key=sim.key_for("openai"), openai_base_url=server.base_urls()["openai"]
        )
        result = await Flow.load(tmp_path / "flow.yaml").ainvoke(
            {"text": "a fox"}, out_dir=tmp_path / "out", keys=keys, checkpointer=False
        )
    assert result.outputs["draft"] == "A local llama wrote this."
    assert result.outputs["text"] and result.outputs["text"] != result.outputs["draft"]
    ((headers, body),) = ollama.requests
    assert body["model"] == "llama3.2" and "authorization" not in headers  # no key sent
    assert sim.count("openai", "chat.completions") == 1  # the other node went to OpenAI


def test_a_model_naming_its_key_variable_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    models = ModelCatalog().load_yaml(
        "vllm:\n  model: {slug: vllm, provider: openai, provider_model_name: qwen,\n"
        "         base_url: 'http://127.0.0.1:9/v1', api_key_env: MY_VLLM_KEY}\n"
    )
    model = models.get("vllm").model
    monkeypatch.delenv("MY_VLLM_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="MY_VLLM_KEY"):
        KeysModel().model_key(model)
    monkeypatch.setenv("MY_VLLM_KEY", "sk-local-secret")
    keys = KeysModel()
    assert keys.model_key(model) == "sk-local-secret"
    assert "sk-local-secret" in keys.secrets()  # redacted like provider keys
    assert keys.model_base_url(model) == "http://127.0.0.1:9/v1"


def test_status_follows_the_dates() -> None:
    dalle = catalog.get("openai-dall-e-3").model
    assert status(dalle, date(2026, 5, 11)) == "deprecated"
    assert status(dalle, date(2026, 5, 12)) == "retired"
    assert status(catalog.get("openai-gpt-6-luna").model) == "current"


def test_a_base_url_on_a_provider_that_cannot_use_it_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="base_url on a model is for OpenAI"):
        ModelCatalog().load_yaml(
            "x:\n  model: {slug: x, provider: stability, provider_model_name: core,\n"
            "         base_url: 'http://127.0.0.1:9'}\n"
        )


def test_a_model_used_for_a_kind_it_does_not_serve_is_refused_before_running(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text(SOON.replace("openai-gpt-4o", "openai-gpt-image-2"))
    result = cli("validate", str(flow))
    assert result.exit_code == EXIT_CODES["invalid_flow"]
    assert "serves only text_to_image, not text_to_text" in result.stderr


def test_the_readme_says_which_providers_models_check_asks_and_which_it_skips() -> None:
    """Every provider whose engine lists its models is named as asked by ``models --check``
    in the README, and every other one (but langchain, local) as skipped."""
    from calliope_graph.config import InferenceModelProvider
    from calliope_graph.model_list import list_function

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("`calliope-graph models --check` asks")
    asked, _, skipped = text[start : text.index("are providers you have no key for")].partition(
        "The others are skipped"
    )

    def named(provider: InferenceModelProvider, where: str) -> bool:
        words = {"hugging_face": "Hugging Face", "azure_vision": "Azure Vision"}
        return words.get(provider.value, provider.value).lower() in where.lower()

    for provider in InferenceModelProvider:
        if provider.value == "langchain":
            continue
        where = asked if list_function(provider) is not None else skipped
        assert named(provider, where), (provider.value, where)


def test_models_check_prints_one_line_per_provider_however_long() -> None:
    """Each provider's verdict is one line (greppable), skipped ones included."""
    result = cli("models", "--check", "--simulate")
    assert result.exit_code == 0, result.output
    providers = {config.provider.value for _, config in catalog.items()}
    lines = result.stdout.splitlines()
    assert sorted(line.split(":", 1)[0] for line in lines) == sorted(providers), lines
