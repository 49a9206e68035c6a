"""The LangChain engines: any langchain-core chat model as a Calliope provider."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
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
from calliope_graph.engines._http import CallStats, call_stats
from calliope_graph.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.inference import text_to_text_inference
from calliope_graph.media import Image
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes

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
        message = answer if isinstance(answer, AIMessage) else AIMessage(answer)
        return ChatResult(generations=[ChatGeneration(message=message)])

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
    """A model with a native ``with_structured_output`` answering dicts from ``answers``
    (an exception in ``answers`` is raised, as a parser or the provider would)."""

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        async def call(messages: Any) -> Any:
            self.seen.append(list(messages))
            answer = self.answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return RunnableLambda(lambda m: None, afunc=call)


class Hanging(Recording):
    """A model that never answers."""

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    yield
    for name in engine.registered_chat_models():
        engine.unregister_chat_model(name)
    engine._BUILT.clear()


def photo(path: Path) -> Image:
    path.write_bytes(image_bytes("a red kite", 120, 90, "PNG"))
    return Image.open(path)


def photo_for(ctx: RunContext) -> Image:
    """A photo saved in the run's own media store."""
    return ctx.store.save_image("kite.png", image_bytes("a red kite", 120, 90, "PNG"))


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
    """Shaped like the provider SDKs' status errors: a status code and the HTTP response."""

    def __init__(
        self, message: str, status_code: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = httpx.Response(status_code, headers=headers)


class RateLimitedError(Exception):
    pass


class APITimeoutError(Exception):
    """Named like the openai/anthropic SDKs' timeout error (which is no TimeoutError)."""


class OpenAIRefusalError(Exception):
    """Named like langchain-openai's structured-output refusal."""


class PolicyError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "content_policy_violation"


@pytest.mark.parametrize(
    ("failure", "cls", "retried"),
    [
        (TimeoutError(), ProviderTimeoutError, True),
        (httpx.ReadTimeout("slow"), ProviderTimeoutError, True),
        (APITimeoutError("Request timed out."), ProviderTimeoutError, True),
        (FakeStatusError("slow down", 429), RateLimitError, True),
        (RateLimitedError("slow down"), RateLimitError, True),
        (FakeStatusError("bad gateway", 502), TransientProviderError, True),
        (httpx.ConnectError("refused"), TransientProviderError, True),
        (FakeStatusError("bad params", 400), InvalidRequestError, False),
        (FakeStatusError("no such model", 404), InvalidRequestError, False),
        (OpenAIRefusalError("I can't help with that."), ContentPolicyError, False),
        (PolicyError("Your request was rejected by the safety system."), ContentPolicyError, False),
        (ValueError("something odd"), ProviderError, False),
    ],
)
async def test_model_exceptions_map_into_the_taxonomy(
    ctx: RunContext, failure: Exception, cls: type[Exception], retried: bool
) -> None:
    model = Recording(answers=[failure] * ctx.retry.max_attempts)
    engine.register_chat_model("flaky", model)
    with pytest.raises(cls) as info:
        await engine.text_to_text(ctx, "hi", config("flaky"))
    assert type(info.value) is cls
    assert isinstance(info.value, ProviderError) and info.value.provider == "langchain"
    assert type(failure).__name__ in str(info.value)
    assert len(model.seen) == (ctx.retry.max_attempts if retried else 1)


# -- faults ---------------------------------------------------------------------------------
async def test_rate_limit_twice_then_success_honours_retry_after(
    ctx: RunContext, clock: Any
) -> None:
    limited = FakeStatusError("rate_limit_error", 429, {"retry-after": "7"})
    model = Recording(answers=[limited, limited, "At last."])
    engine.register_chat_model("busy", model)
    stats = CallStats()
    token = call_stats.set(stats)
    try:
        assert await engine.text_to_text(ctx, "hi", config("busy")) == "At last."
    finally:
        call_stats.reset(token)
    assert clock.waits == [7.0, 7.0] and len(model.seen) == 3
    assert stats.attempts == 3 and stats.retries == 2 and stats.calls == {"langchain": 3}


async def test_rate_limit_beyond_the_cap_fails_at_once(ctx: RunContext) -> None:
    model = Recording(answers=[FakeStatusError("quota", 429, {"retry-after": "600"})])
    engine.register_chat_model("busy", model)
    with pytest.raises(RateLimitError) as info:
        await engine.text_to_text(ctx, "hi", config("busy"))
    assert info.value.retry_after == 600 and len(model.seen) == 1


@pytest.mark.parametrize("status", [529, 500])
async def test_overloaded_and_server_errors_are_retried(ctx: RunContext, status: int) -> None:
    failure = FakeStatusError(f"HTTP {status}", status)
    model = Recording(answers=[failure, failure, "Recovered."])
    engine.register_chat_model("shaky", model)
    assert await engine.text_to_text(ctx, "hi", config("shaky")) == "Recovered."
    assert len(model.seen) == 3
    down = Recording(answers=[failure] * ctx.retry.max_attempts)
    engine.register_chat_model("down", down)
    with pytest.raises(TransientProviderError) as info:
        await engine.image_analysis(ctx, photo_for(ctx), config("down"))
    assert info.value.status == status and len(down.seen) == ctx.retry.max_attempts


async def test_a_hanging_model_times_out(ctx: RunContext) -> None:
    model = Hanging(answers=[])
    engine.register_chat_model("stuck", model)
    with pytest.raises(ProviderTimeoutError, match="call_timeout") as info:
        await engine.text_to_text(ctx, "hi", config("stuck", call_timeout=0.01))
    assert "0.01s" in str(info.value)
    assert len(model.seen) == ctx.retry.max_attempts


async def test_bad_call_timeout_is_a_configuration_error(ctx: RunContext) -> None:
    engine.register_chat_model("m", Recording(answers=["x"]))
    with pytest.raises(ConfigurationError, match="call_timeout"):
        await engine.text_to_text(ctx, "hi", config("m", call_timeout="soon"))


async def test_unparsable_structured_answer_is_asked_again(ctx: RunContext) -> None:
    broken = OutputParserException(
        'Failed to parse Scene from completion {"title": . Got: Expecting value',
        llm_output='{"title": ',
    )
    model = Structured(answers=[broken, {"title": "Dawn", "characters": ["fox"]}])
    engine.register_chat_model("structured", model)
    scene = await engine.messages_to_object(
        ctx, [HumanMessage("A fox.")], config("structured"), Scene
    )
    assert scene.characters == ["fox"]
    shown, reask = model.seen[1][-2:]
    assert isinstance(shown, AIMessage) and shown.content == '{"title": '
    assert isinstance(reask, HumanMessage) and "could not be parsed" in str(reask.content)


@pytest.mark.parametrize(
    "answer",
    [
        AIMessage("", response_metadata={"stop_reason": "refusal"}),
        AIMessage("", additional_kwargs={"refusal": "I can't help with that."}),
        AIMessage("", response_metadata={"finish_reason": "content_filter"}),
    ],
)
async def test_refusals_are_content_policy_errors(
    ctx: RunContext, tmp_path: Path, answer: AIMessage
) -> None:
    model = Recording(answers=[answer, answer, answer])
    engine.register_chat_model("prim", model)
    with pytest.raises(ContentPolicyError, match="content_policy"):
        await engine.text_to_text(ctx, "something forbidden", config("prim"))
    with pytest.raises(ContentPolicyError):
        await engine.image_analysis(ctx, photo(tmp_path / "k.png"), config("prim"))
    with pytest.raises(ContentPolicyError):
        await engine.messages_to_object(ctx, [HumanMessage("x")], config("prim"), Scene)
    assert len(model.seen) == 3  # never retried


async def test_a_filtered_answer_that_still_has_text_is_kept(ctx: RunContext) -> None:
    answer = AIMessage("Partly said.", response_metadata={"finish_reason": "content_filter"})
    engine.register_chat_model("m", Recording(answers=[answer]))
    assert await engine.text_to_text(ctx, "hi", config("m")) == "Partly said."


async def test_models_without_image_inputs_are_refused_before_calling(
    ctx: RunContext, tmp_path: Path
) -> None:
    cfg = config(FAKE_LIST, responses=["{}"], profile={"image_inputs": False})
    with pytest.raises(ConfigurationError, match="does not accept images"):
        await engine.image_analysis(ctx, photo(tmp_path / "k.png"), cfg)
    assert engine.chat_model(cfg).i == 0  # type: ignore[attr-defined]


async def test_a_config_can_carry_the_model_instance(ctx: RunContext) -> None:
    model = Recording(answers=["Inline."])
    cfg = config("inline", chat_model=model)
    assert await engine.text_to_text(ctx, "hi", cfg) == "Inline."
    assert len(model.seen) == 1
    with pytest.raises(ConfigurationError, match="chat_model parameter"):
        await engine.text_to_text(ctx, "hi", config("inline", chat_model="gpt"))


async def test_auth_failures_never_carry_the_key(
    sim: Simulator, ctx: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = sim.key_for("openai")
    failure = FakeStatusError(f"Incorrect API key provided: {key}", 401)
    locked = Recording(answers=[failure])
    engine.register_chat_model("locked", locked)
    with pytest.raises(AuthenticationError) as info:
        await engine.text_to_text(ctx, "hi", config("locked"))
    assert key not in str(info.value) and "***" in str(info.value)
    assert key not in repr(info.value) and len(locked.seen) == 1
    # Retried failures are logged at each attempt: those lines are redacted too.
    leaky = FakeStatusError(f"upstream failed for key {key}", 503)
    engine.register_chat_model("leaky", Recording(answers=[leaky] * ctx.retry.max_attempts))
    with pytest.raises(TransientProviderError) as retried:
        await engine.text_to_text(ctx, "hi", config("leaky"))
    assert key not in str(retried.value)
    assert "retrying" in caplog.text and key not in caplog.text


def test_register_rejects_non_models() -> None:
    with pytest.raises(ConfigurationError, match="BaseChatModel"):
        engine.register_chat_model("x", object())  # type: ignore[arg-type]
