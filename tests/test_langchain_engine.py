"""The LangChain engines: any langchain-core chat model as a Calliope provider."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import BaseModel, Field

from calliope_graph.config import InferenceModel, ModelConfig
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines import langchain as engine
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.inference import text_to_text_inference
from calliope_graph.media import Image
from calliope_graph.simulate import Simulator
from calliope_graph.simulate._content import image_bytes

FAKE_LIST = "langchain_core.language_models.fake_chat_models:FakeListChatModel"


def config(name: str, **params: Any) -> ModelConfig:
    return ModelConfig(
        slug=f"lc-{name}",
        model_parameters=params,
        model=InferenceModel(slug=f"lc-{name}", provider="langchain", provider_model_name=name),
    )


class Scene(BaseModel):
    title: str
    characters: list[str] = Field(min_length=1)


class Recording(BaseChatModel):
    """A chat model that records what it was sent and answers from a list (or raises)."""

    answers: list[Any]
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _next(self, messages: list[BaseMessage]) -> ChatResult:
        self.seen.append(list(messages))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return ChatResult(generations=[ChatGeneration(message=AIMessage(answer))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._next(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._next(messages)


class Structured(Recording):
    """A model with a native ``with_structured_output`` answering dicts from ``answers``."""

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        async def call(messages: Any) -> Any:
            self.seen.append(list(messages))
            return self.answers.pop(0)

        return RunnableLambda(lambda m: None, afunc=call)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    yield
    for name in engine.registered_chat_models():
        engine.unregister_chat_model(name)
    engine._BUILT.clear()


def photo(path: Path) -> Image:
    path.write_bytes(image_bytes("a red kite", 120, 90, "PNG"))
    return Image.open(path)


def test_langchain_conversions_are_registered() -> None:
    for conversion in (
        Conversion.TEXT_TO_TEXT,
        Conversion.IMAGE_ANALYSIS,
        Conversion.MESSAGES_TO_OBJECT,
    ):
        assert get_engine(conversion, "langchain") is not None


async def test_registered_model_answers_text(ctx: RunContext) -> None:
    model = Recording(answers=["Once upon a time."])
    engine.register_chat_model("storyteller", model)
    cfg = config("storyteller", system_prompt="You tell fables.")
    assert await engine.text_to_text(ctx, "A fox", cfg) == "Once upon a time."
    sent = model.seen[0]
    assert isinstance(sent[0], SystemMessage) and sent[0].content == "You tell fables."
    assert isinstance(sent[1], HumanMessage) and sent[1].content == "A fox"


async def test_generic_fake_through_the_functional_api(sim: Simulator) -> None:
    engine.register_chat_model(
        "generic", GenericFakeChatModel(messages=iter([AIMessage("Hello there.")]))
    )
    async with sim.client() as client:
        text = await text_to_text_inference(client, "hi", config("generic"), sim.keys())
    assert text == "Hello there."


async def test_import_path_builds_the_model_once_from_parameters(ctx: RunContext) -> None:
    cfg = config(FAKE_LIST, responses=["first", "second"])
    assert await engine.text_to_text(ctx, "a", cfg) == "first"
    assert await engine.text_to_text(ctx, "b", cfg) == "second"
    assert isinstance(engine.chat_model(cfg), FakeListChatModel)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("nobody", "register_chat_model"),
        ("no_such_module_xyz:Model", "Cannot import"),
        ("langchain_core.messages:HumanMessage", "not a langchain-core BaseChatModel"),
    ],
)
async def test_bad_model_names_are_configuration_errors(
    ctx: RunContext, name: str, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        await engine.text_to_text(ctx, "hi", config(name))


async def test_bad_constructor_arguments_are_configuration_errors(ctx: RunContext) -> None:
    with pytest.raises(ConfigurationError, match="model_parameters"):
        await engine.text_to_text(ctx, "hi", config(FAKE_LIST, responses=5))


async def test_image_analysis_sends_an_image_block_and_parses_json(
    ctx: RunContext, tmp_path: Path
) -> None:
    answer = {"description": "A kite.", "captions": ["a kite"], "tags": ["red"], "objects": []}
    model = Recording(answers=["```json\n" + json.dumps(answer) + "\n```"])
    engine.register_chat_model("vision", model)
    image = photo(tmp_path / "k.png")
    analysis = await engine.image_analysis(ctx, image, config("vision"))
    assert analysis.description == "A kite." and analysis.tags == ["red"]
    assert analysis.sources == ["langchain"]
    content = model.seen[0][0].content
    assert isinstance(content, list)
    assert content[1] == {"type": "image_url", "image_url": {"url": image.data_url()}}


async def test_image_analysis_asks_again_then_fails_clearly(
    ctx: RunContext, tmp_path: Path
) -> None:
    model = Recording(answers=["a kite", '{"description": "A kite."}', "no", "still no"])
    engine.register_chat_model("vision", model)
    image = photo(tmp_path / "k.png")
    analysis = await engine.image_analysis(ctx, image, config("vision"))
    assert analysis.description == "A kite." and len(model.seen) == 2
    with pytest.raises(InvalidRequestError, match="JSON object"):
        await engine.image_analysis(ctx, image, config("vision"))


async def test_messages_to_object_uses_structured_output(ctx: RunContext) -> None:
    model = Structured(answers=[Scene(title="Dawn", characters=["fox"])])
    engine.register_chat_model("structured", model)
    scene = await engine.messages_to_object(
        ctx, [HumanMessage("A fox at dawn.")], config("structured"), Scene
    )
    assert scene == Scene(title="Dawn", characters=["fox"])


async def test_messages_to_object_reasks_once_with_the_error(ctx: RunContext) -> None:
    model = Structured(
        answers=[{"title": "Dawn", "characters": []}, {"title": "Dawn", "characters": ["fox"]}]
    )
    engine.register_chat_model("structured", model)
    scene = await engine.messages_to_object(
        ctx, [HumanMessage("A fox.")], config("structured"), Scene
    )
    assert scene.characters == ["fox"]
    reask = model.seen[1][-1]
    assert isinstance(reask, HumanMessage) and "characters" in str(reask.content)


async def test_messages_to_object_falls_back_to_json_and_fails_after_two(
    ctx: RunContext,
) -> None:
    cfg = config(FAKE_LIST, responses=['{"title": "Dawn", "characters": ["fox"]}'])
    scene = await engine.messages_to_object(ctx, [HumanMessage("A fox.")], cfg, Scene)
    assert scene.characters == ["fox"]
    bad = Recording(answers=["not json", '{"title": 1}'])
    engine.register_chat_model("bad", bad)
    with pytest.raises(InvalidRequestError, match="valid Scene in two tries"):
        await engine.messages_to_object(ctx, [HumanMessage("A fox.")], config("bad"), Scene)
    assert "JSON Schema" in str(bad.seen[0][-1].content)


class FakeStatusError(Exception):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RateLimitedError(Exception):
    pass


@pytest.mark.parametrize(
    ("failure", "cls"),
    [
        (TimeoutError(), ProviderTimeoutError),
        (httpx.ReadTimeout("slow"), ProviderTimeoutError),
        (FakeStatusError("slow down", 429), RateLimitError),
        (RateLimitedError("slow down"), RateLimitError),
        (FakeStatusError("bad gateway", 502), TransientProviderError),
        (httpx.ConnectError("refused"), TransientProviderError),
        (FakeStatusError("bad params", 400), InvalidRequestError),
        (ValueError("something odd"), ProviderError),
    ],
)
async def test_model_exceptions_map_into_the_taxonomy(
    ctx: RunContext, failure: Exception, cls: type[Exception]
) -> None:
    engine.register_chat_model("flaky", Recording(answers=[failure]))
    with pytest.raises(cls) as info:
        await engine.text_to_text(ctx, "hi", config("flaky"))
    assert isinstance(info.value, ProviderError) and info.value.provider == "langchain"
    if not isinstance(info.value, ProviderTimeoutError):
        assert type(failure).__name__ in str(info.value)


async def test_auth_failures_never_carry_the_key(
    sim: Simulator, ctx: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = sim.key_for("openai")
    failure = FakeStatusError(f"Incorrect API key provided: {key}", 401)
    engine.register_chat_model("locked", Recording(answers=[failure]))
    with pytest.raises(AuthenticationError) as info:
        await engine.text_to_text(ctx, "hi", config("locked"))
    assert key not in str(info.value) and "***" in str(info.value)
    assert key not in caplog.text


def test_register_rejects_non_models() -> None:
    with pytest.raises(ConfigurationError, match="BaseChatModel"):
        engine.register_chat_model("x", object())  # type: ignore[arg-type]
