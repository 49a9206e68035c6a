"""Every request each engine sends conforms to the provider's API as the provider's official
SDK types it, and so does every answer the simulator gives back.

Each case below runs one engine conversion (or a variant that sends a different shape:
Stability v1 vs v2beta, Azure 3.2 vs 4.0, Replicate model vs version predictions, polling
GETs, speech, transcription...) against the simulator through a recording transport, then
checks each recorded request to the provider's API against the operation the table names
(method, path template, query, JSON or multipart body) and each answer against that
operation's answer type for its status (``_spec_check``).

Where the types come from: the providers' official SDKs, installed from PyPI by the ``test``
extra and never copied here (nothing brought in with the ``fetch`` tool is committed: see
docs/architecture.md). Their request/response types are generated from the providers'
published specs (``openai``, ``anthropic``, ``runwayml``, ``lumaai``: Stainless;
``elevenlabs``: Fern; ``azure-ai-vision-imageanalysis``: TypeSpec) or typed by the provider
(``google-genai``, ``replicate``, ``huggingface_hub``'s generated task types).

APIs with no official typed SDK are checked against types written here from the provider's
documentation (facts: field names, required fields, types, bounds), each citing its page:
Stability's REST API (v1 and v2beta), Azure Computer Vision 3.2 (the SDK covers only Image
Analysis 4.0), Gemini's Imagen ``:predict`` and Veo ``:predictLongRunning`` wire formats and
the model list (google-genai converts those from its own objects), the request envelope of
``generateContent`` (its parts are the SDK's types), and fal's Platform APIs model list. fal's
queue API is not checked: fal-client types nothing and fal publishes one OpenAPI document
per model endpoint, generated on request.

Adding a provider is data: a :class:`Provider` entry (its API types and hosts) and a few
:class:`Case` rows naming the engine call and the operations it must use.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required

import httpx
import pytest
from _spec_check import Api, Operation, SpecMismatch, azure_typed, typed_dict
from _support import Recorder, make_ctx
from google.genai import types as g
from langchain_core.messages import HumanMessage, SystemMessage
from openai.types.shared import ErrorObject
from pydantic import AfterValidator, BaseModel, Field, SecretStr, TypeAdapter
from typing_extensions import TypedDict

from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    InferenceModelProviderVariant,
    ModelConfig,
)
from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.errors import AuthenticationError, ProviderTimeoutError
from calliope_graph.media import Audio, Image
from calliope_graph.simulate import Simulator
from calliope_graph.testing import image_bytes, wav_bytes

P = InferenceModelProvider


# -- the providers: their APIs as their official SDKs type them, and their hosts ---------------
def _openai() -> Api:
    """OpenAI's API as the ``openai`` SDK types it (Stainless-generated from OpenAI's OpenAPI
    spec): the ``*Params`` TypedDicts its methods send, the models it parses answers into."""
    from openai.types import Completion, ImageGenStreamEvent, ImagesResponse
    from openai.types.audio import SpeechCreateParams, Transcription
    from openai.types.audio.transcription_create_params import TranscriptionCreateParams
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.chat.completion_create_params import CompletionCreateParams as ChatParams
    from openai.types.completion_create_params import CompletionCreateParams
    from openai.types.image_generate_params import ImageGenerateParams

    def op(op_id: str, path: str, answer: Any, **kwargs: Any) -> Operation:
        return Operation(
            op_id, "post", f"/v1{path}", answers={200: answer}, error=OpenAIError, **kwargs
        )

    return Api(
        "openai (openai SDK types)",
        [
            op(
                "chat.completions.create",
                "/chat/completions",
                ChatCompletion,
                body=ChatParams,
                stream=ChatCompletionChunk,
            ),
            op("completions.create", "/completions", Completion, body=CompletionCreateParams),
            op(
                "images.generate",
                "/images/generations",
                ImagesResponse,
                body=ImageGenerateParams,
                stream=ImageGenStreamEvent,  # stream: true, partial_images (previews)
            ),
            op(
                "audio.transcriptions.create",
                "/audio/transcriptions",
                Transcription,
                form=TranscriptionCreateParams,
            ),
            # The speech answer is the audio itself, in the requested response_format.
            op("audio.speech.create", "/audio/speech", "audio/", body=SpeechCreateParams),
        ],
    )


def _anthropic() -> Api:
    """Anthropic's Messages API as the ``anthropic`` SDK types it (Stainless-generated from
    Anthropic's OpenAPI spec)."""
    from anthropic.types import ErrorResponse, Message
    from anthropic.types.message_create_params import MessageCreateParams

    return Api(
        "anthropic (anthropic SDK types)",
        [
            Operation(
                "messages.create",
                "post",
                "/v1/messages",
                body=MessageCreateParams,
                answers={200: Message},
                error=ErrorResponse,
            )
        ],
    )


def _replicate() -> Api:
    """Replicate's predictions API as the ``replicate`` SDK (1.x, hand-written by Replicate)
    types it: the ``Prediction`` model every answer is parsed into, and the body
    ``Predictions.create`` sends — ``version``/``input`` plus ``CreatePredictionParams``
    without ``wait``, which the SDK sends as the ``Prefer: wait=N`` header
    (replicate/prediction.py ``_create_prediction_body`` / ``_create_prediction_headers``)."""
    from replicate.prediction import Prediction, Predictions

    sdk = typing.get_type_hints(Predictions.CreatePredictionParams, include_extras=True)
    extra = {name: hint for name, hint in sdk.items() if name != "wait"}
    by_version = typed_dict(
        "PredictionsCreateBody",
        {"version": Required[str], "input": Required[dict[str, Any]], **extra},
    )
    by_model = typed_dict(
        "ModelsPredictionsCreateBody", {"input": Required[dict[str, Any]], **extra}
    )
    # A prediction is created with 201 (or 200 once a `Prefer: wait` finished it).
    made = {200: Prediction, 201: Prediction}
    return Api(
        "replicate (replicate SDK types)",
        [
            Operation(
                "predictions.create", "post", "/v1/predictions", body=by_version, answers=made
            ),
            Operation(
                "models.predictions.create",
                "post",
                "/v1/models/{owner}/{name}/predictions",
                body=by_model,
                answers=made,
            ),
            Operation("predictions.get", "get", "/v1/predictions/{id}", answers={200: Prediction}),
            Operation(
                "predictions.cancel",
                "post",
                "/v1/predictions/{id}/cancel",
                answers={200: Prediction},
            ),
        ],
    )


def _runway() -> Api:
    """Runway's API as the ``runwayml`` SDK types it (Stainless-generated from Runway's
    OpenAPI spec)."""
    from runwayml.types import (
        ImageToVideoCreateParams,
        ImageToVideoCreateResponse,
        TaskRetrieveResponse,
    )

    return Api(
        "runway (runwayml SDK types)",
        [
            Operation(
                "image_to_video.create",
                "post",
                "/v1/image_to_video",
                body=ImageToVideoCreateParams,
                answers={200: ImageToVideoCreateResponse},
            ),
            Operation(
                "tasks.retrieve", "get", "/v1/tasks/{id}", answers={200: TaskRetrieveResponse}
            ),
        ],
    )


def _elevenlabs() -> Api:
    """ElevenLabs' text-to-speech as the ``elevenlabs`` SDK (Fern-generated from ElevenLabs'
    OpenAPI spec) types it. Fern passes the body's fields as keyword arguments of
    ``text_to_speech.convert`` rather than as one TypedDict, so the body and query types are
    built from that method's annotations: ``enable_logging``, ``optimize_streaming_latency``
    and ``output_format`` go in the query, every other field but ``voice_id`` (the path)
    and ``request_options`` in the JSON body (elevenlabs/text_to_speech/raw_client.py)."""
    from elevenlabs.text_to_speech.client import TextToSpeechClient

    hints = typing.get_type_hints(TextToSpeechClient.convert, include_extras=True)
    in_query = ("enable_logging", "optimize_streaming_latency", "output_format")
    skip = {"voice_id", "request_options", "return", *in_query}
    body = typed_dict(
        "TextToSpeechBody",
        {
            n: Required[h] if n == "text" else NotRequired[h]
            for n, h in hints.items()
            if n not in skip
        },
    )
    query = typed_dict("TextToSpeechQuery", {n: NotRequired[hints[n]] for n in in_query})
    return Api(
        "elevenlabs (elevenlabs SDK types)",
        [
            Operation(
                "text_to_speech.convert",
                "post",
                "/v1/text-to-speech/{voice_id}",
                body=body,
                query=query,
                answers={200: "audio/"},
            )
        ],
    )


class OpenAIError(TypedDict):
    """Every OpenAI error body (openai-python ``_client._make_status_error`` reads
    ``body["error"]`` as an ``ErrorObject``)."""

    error: ErrorObject


class WireGenerationConfig(g.GenerationConfig):
    """``generationConfig`` as google-genai sends it: its ``GenerationConfig`` model plus the
    ``imageConfig`` it moves there from ``GenerateContentConfig.image_config``
    (google/genai/models.py ``_GenerateContentConfig_to_mldev``)."""

    image_config: g.ImageConfig | None = None


class GenerateContentBody(TypedDict, total=False):
    contents: Required[list[g.Content]]
    systemInstruction: g.Content
    generationConfig: WireGenerationConfig
    safetySettings: list[g.SafetySetting]
    tools: list[g.Tool]
    toolConfig: g.ToolConfig
    cachedContent: str


class StreamQuery(TypedDict):
    alt: Literal["sse"]  # streamed as server-sent events


class ListQuery(TypedDict, total=False):
    pageSize: int
    pageToken: str


class ModelsPage(TypedDict, total=False):
    """models.list (ai.google.dev/api/models#response-body_1); each model a ``Model``
    resource as the REST reference has it (the SDK renames some of its fields)."""

    models: Required[list[GeminiModel]]
    nextPageToken: str


class ImagenParameters(TypedDict, total=False):
    sampleCount: int
    aspectRatio: Literal["1:1", "3:4", "4:3", "9:16", "16:9"]
    personGeneration: Literal["dont_allow", "allow_adult", "allow_all"]
    imageSize: Literal["1K", "2K"]
    negativePrompt: str
    includeRaiReason: bool


class ImagenInstance(TypedDict):
    prompt: str


class ImagenBody(TypedDict):
    instances: list[ImagenInstance]
    parameters: NotRequired[ImagenParameters]


class ImagenPrediction(TypedDict, total=False):
    bytesBase64Encoded: str
    mimeType: str
    raiFilteredReason: str


class ImagenAnswer(TypedDict, total=False):
    predictions: list[ImagenPrediction]


class InlineImage(TypedDict):
    bytesBase64Encoded: str
    mimeType: str


class VeoInstance(TypedDict, total=False):
    prompt: Required[str]
    image: InlineImage


class VeoParameters(TypedDict, total=False):
    aspectRatio: Literal["16:9", "9:16"]
    durationSeconds: int
    resolution: Literal["720p", "1080p"]
    personGeneration: Literal["allow_all", "allow_adult", "dont_allow"]
    negativePrompt: str
    seed: int


class VeoBody(TypedDict):
    instances: list[VeoInstance]
    parameters: NotRequired[VeoParameters]


class Started(TypedDict, total=False):
    name: Required[str]
    done: bool


class VideoUri(TypedDict):
    uri: str


class Sample(TypedDict):
    video: VideoUri


class VideoResponse(TypedDict, total=False):
    generatedSamples: list[Sample]
    raiMediaFilteredCount: int
    raiMediaFilteredReasons: list[str]


class VideoResult(TypedDict, total=False):
    generateVideoResponse: VideoResponse


class Status(TypedDict, total=False):
    code: int
    message: str
    details: list[dict[str, Any]]


class Operation_(TypedDict, total=False):
    """A google.longrunning.Operation: ``name``, then ``done`` with a ``response`` or an
    ``error`` (a google.rpc.Status)."""

    name: Required[str]
    done: bool
    metadata: dict[str, Any]
    response: VideoResult
    error: Status


class GoogleError(TypedDict):
    """Every Gemini API error: ``{"error": google.rpc.Status + status}``
    (ai.google.dev/gemini-api/docs/troubleshooting; google-genai errors.py reads it)."""

    error: ErrorStatus


def _google() -> Api:
    """The Gemini API as ``google-genai`` types it. The SDK's models (``Content``,
    ``GenerationConfig``, ``GenerateContentResponse``...) are the REST resources' shapes with
    snake_case names aliased to the wire's camelCase, and refuse unknown keys; the request
    body around them is the REST reference's (ai.google.dev/api/generate-content#request-body),
    written here. Imagen's ``:predict`` and Veo's ``:predictLongRunning`` wire formats are
    not typed by the SDK (it converts its own config objects): their fields are the docs'
    (ai.google.dev/gemini-api/docs/imagen, .../docs/veo), written here."""
    # Answers are validated as declared (TypedDicts ignore unknown keys): the fakes' answers
    # are checked for their documented fields, not for every extra the API may add.
    answer = {200: g.GenerateContentResponse}
    model = "/v1beta/models/{model}"
    return Api(
        "gemini (google-genai SDK types)",
        [
            Operation(
                "models.generateContent",
                "post",
                f"{model}:generateContent",
                body=GenerateContentBody,
                answers=answer,
                error=GoogleError,
            ),
            Operation(
                "models.streamGenerateContent",
                "post",
                f"{model}:streamGenerateContent",
                body=GenerateContentBody,
                query=StreamQuery,
                answers=answer,
                stream=g.GenerateContentResponse,
                error=GoogleError,
            ),
            Operation(
                "models.list",
                "get",
                "/v1beta/models",
                query=ListQuery,
                answers={200: ModelsPage},
                error=GoogleError,
            ),
            Operation(
                "models.predict",
                "post",
                f"{model}:predict",
                body=ImagenBody,
                answers={200: ImagenAnswer},
                error=GoogleError,
            ),
            Operation(
                "models.predictLongRunning",
                "post",
                f"{model}:predictLongRunning",
                body=VeoBody,
                answers={200: Started},
                error=GoogleError,
            ),
            Operation(
                "models.operations.get",
                "get",
                f"{model}/operations/{{operation}}",
                answers={200: Operation_},
                error=GoogleError,
            ),
        ],
    )


class ErrorStatus(TypedDict, total=False):
    code: Required[int]
    message: Required[str]
    status: str
    details: list[dict[str, Any]]


class GeminiModel(TypedDict, total=False):
    """A ``Model`` resource (ai.google.dev/api/models#Model): ``name``, ``version`` and the
    token limits are what the REST reference marks required; the rest optional."""

    name: Required[str]
    baseModelId: str
    version: Required[str]
    displayName: str
    description: str
    inputTokenLimit: Required[int]
    outputTokenLimit: Required[int]
    supportedGenerationMethods: Required[list[str]]
    thinking: bool
    temperature: float
    maxTemperature: float
    topP: float
    topK: int


# Stability: no official typed SDK (stability-sdk is the retired gRPC client), so its REST
# API is written here from Stability's API reference (platform.stability.ai/docs/api-reference):
# v1 `textToImage` (#tag/SDXL-1.0-and-SD1.6/operation/textToImage) and the v2beta Stable
# Image generate endpoints (#tag/Generate/paths/~1v2beta~1stable-image~1generate~1{ultra,core,sd3}).
StylePreset = Literal[
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
    "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk",
    "origami", "photographic", "pixel-art", "tile-texture",
]  # fmt: skip
AspectRatio = Literal["16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"]
Seed = Annotated[int, Field(ge=0, le=4294967294)]


class TextPrompt(TypedDict, total=False):
    text: Required[Annotated[str, Field(max_length=2000)]]
    weight: float


class StabilityV1Body(TypedDict, total=False):
    text_prompts: Required[Annotated[list[TextPrompt], Field(min_length=1)]]
    height: Annotated[int, Field(ge=128, multiple_of=64)]
    width: Annotated[int, Field(ge=128, multiple_of=64)]
    cfg_scale: Annotated[float, Field(ge=0, le=35)]
    clip_guidance_preset: Literal[
        "FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST"
    ]
    sampler: Literal[
        "DDIM", "DDPM", "K_DPMPP_2M", "K_DPMPP_2S_ANCESTRAL", "K_DPM_2", "K_DPM_2_ANCESTRAL",
        "K_EULER", "K_EULER_ANCESTRAL", "K_HEUN", "K_LMS",
    ]  # fmt: skip
    samples: Annotated[int, Field(ge=1, le=10)]
    seed: Annotated[int, Field(ge=0, le=4294967295)]
    steps: Annotated[int, Field(ge=10, le=50)]
    style_preset: StylePreset
    extras: dict[str, Any]


class V1Artifact(TypedDict):
    base64: str
    seed: int
    finishReason: Literal["SUCCESS", "ERROR", "CONTENT_FILTERED"]


class StabilityV1Answer(TypedDict):
    artifacts: list[V1Artifact]


class StabilityV1Error(TypedDict):
    id: str
    name: str
    message: str


class StableImageForm(TypedDict, total=False):
    """The fields every v2beta generate endpoint takes (multipart/form-data)."""

    prompt: Required[Annotated[str, Field(min_length=1, max_length=10000)]]
    negative_prompt: Annotated[str, Field(max_length=10000)]
    aspect_ratio: AspectRatio
    seed: Seed
    output_format: Literal["jpeg", "png", "webp"]


class UltraForm(StableImageForm, total=False):
    image: bytes
    strength: Annotated[float, Field(ge=0, le=1)]
    style_preset: StylePreset


class CoreForm(StableImageForm, total=False):
    style_preset: StylePreset


class Sd3Form(StableImageForm, total=False):
    mode: Literal["text-to-image", "image-to-image"]
    image: bytes
    strength: Annotated[float, Field(ge=0, le=1)]
    model: Literal[
        "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large",
        "sd3-large-turbo", "sd3-medium",
    ]  # fmt: skip
    cfg_scale: Annotated[float, Field(ge=1, le=10)]
    style_preset: StylePreset


class StableImageJson(TypedDict):
    """The answer with ``accept: application/json``: the image as base64."""

    image: str
    seed: int
    finish_reason: Literal["SUCCESS", "CONTENT_FILTERED"]


class StabilityV2Error(TypedDict):
    id: str
    name: str
    errors: list[str]


def _stability() -> Api:
    def generate(model: str, form: Any) -> Operation:
        return Operation(
            f"stable-image.generate.{model}",
            "post",
            f"/v2beta/stable-image/generate/{model}",
            form=form,
            answers={200: "image/"},
            error=StabilityV2Error,
        )

    return Api(
        "stability (API reference, written here)",
        [
            Operation(
                "v1.textToImage",
                "post",
                "/v1/generation/{engine_id}/text-to-image",
                body=StabilityV1Body,
                answers={200: StabilityV1Answer},
                error=StabilityV1Error,
            ),
            generate("ultra", UltraForm),
            generate("core", CoreForm),
            generate("sd3", Sd3Form),
        ],
    )


def _azure_4() -> Api:
    """Image Analysis 4.0 as ``azure-ai-vision-imageanalysis`` (generated from the service's
    TypeSpec) types it: the ``features`` it knows (``VisualFeatures``) and the
    ``ImageAnalysisResult`` model, read as a closed TypedDict of its wire names. The query's
    other names are the SDK's (its ``_operations`` module's request builder for
    ``analyze_from_image_data``)."""
    from azure.ai.vision.imageanalysis.models import ImageAnalysisResult, VisualFeatures

    known = {feature.value for feature in VisualFeatures}

    def features(value: str) -> str:
        unknown = [f for f in value.split(",") if f not in known]
        if unknown:
            raise ValueError(f"{unknown} not among VisualFeatures {sorted(known)}")
        return value

    analyze_query = typed_dict(
        "AnalyzeQuery",
        {
            "api-version": Required[Literal["2023-10-01"]],
            "features": Required[Annotated[str, AfterValidator(features)]],
            "language": NotRequired[str],
            "gender-neutral-caption": NotRequired[bool],
            "smartcrops-aspect-ratios": NotRequired[str],
            "model-version": NotRequired[str],
        },
    )
    return Api(
        "azure-4.0 (azure-ai-vision-imageanalysis SDK types)",
        [
            Operation(
                "analyze",
                "post",
                "/computervision/imageanalysis:analyze",
                raw=("application/octet-stream", "image/"),
                query=analyze_query,
                answers={200: azure_typed(ImageAnalysisResult)},
            )
        ],
    )


# Azure Computer Vision 3.2: azure-ai-vision-imageanalysis covers only 4.0 and the 3.2 SDK
# (azure-cognitiveservices-vision-computervision) is retired, so the two calls are written
# here from the 3.2 REST reference (learn.microsoft.com/rest/api/computervision/analyze-image
# and .../ocr).
V32Feature = Literal[
    "Categories", "Tags", "Description", "Faces", "ImageType", "Color", "Adult", "Objects",
    "Brands",
]  # fmt: skip


def _v32_features(value: str) -> str:
    TypeAdapter(list[V32Feature]).validate_python(value.split(","))
    return value


class V32AnalyzeQuery(TypedDict, total=False):
    visualFeatures: Annotated[str, AfterValidator(_v32_features)]
    details: str
    language: Literal["en", "es", "ja", "pt", "zh"]
    descriptionExclude: str


V32OcrQuery = typed_dict(
    "V32OcrQuery",
    {
        "language": NotRequired[str],
        "detectOrientation": NotRequired[bool],
        "model-version": NotRequired[str],
    },
)


class V32Metadata(TypedDict, total=False):
    width: Required[int]
    height: Required[int]
    format: str


class V32Analysis(TypedDict, total=False):
    """ImageAnalysis: requestId, metadata and modelVersion with the requested features."""

    requestId: Required[str]
    metadata: Required[V32Metadata]
    modelVersion: Required[str]
    categories: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    description: dict[str, Any]
    objects: list[dict[str, Any]]
    faces: list[dict[str, Any]]
    brands: list[dict[str, Any]]
    color: dict[str, Any]
    imageType: dict[str, Any]
    adult: dict[str, Any]


class V32Word(TypedDict):
    boundingBox: str
    text: str


class V32Line(TypedDict):
    boundingBox: str
    words: list[V32Word]


class V32Region(TypedDict):
    boundingBox: str
    lines: list[V32Line]


class V32Ocr(TypedDict, total=False):
    language: Required[str]
    textAngle: float
    orientation: str
    regions: Required[list[V32Region]]
    modelVersion: str


class V32Error(TypedDict):
    """ComputerVisionErrorResponse: ``{"error": {"code", "message", ...}}``."""

    error: dict[str, Any]


def _azure_32() -> Api:
    raw = ("application/octet-stream", "image/")
    return Api(
        "azure-3.2 (REST reference, written here)",
        [
            Operation(
                "analyze",
                "post",
                "/vision/v3.2/analyze",
                raw=raw,
                query=V32AnalyzeQuery,
                answers={200: V32Analysis},
                error=V32Error,
            ),
            Operation(
                "ocr",
                "post",
                "/vision/v3.2/ocr",
                raw=raw,
                query=V32OcrQuery,
                answers={200: V32Ocr},
                error=V32Error,
            ),
        ],
    )


def _hugging_face() -> Api:
    """The Inference API (hf-inference provider) with ``huggingface_hub``'s generated task
    types (``huggingface_hub.inference._generated.types``, generated from the tasks' JSON
    Schemas): ``POST /models/{model_id}`` per task, a JSON body for text tasks and raw bytes
    for image and audio inputs. hf-inference answers text-generation and image-to-text with a
    *list* of the task's output (``InferenceClient`` accepts both forms)."""
    from huggingface_hub import (
        AutomaticSpeechRecognitionOutput,
        ImageToTextOutput,
        TextGenerationInput,
        TextGenerationOutput,
        TextToImageInput,
    )

    def task(name: str, answer: Any, **kwargs: Any) -> Operation:
        return Operation(
            name, "post", "/hf-inference/models/{model_id*}", answers={200: answer}, **kwargs
        )

    return Api(
        "hugging_face (huggingface_hub task types)",
        [
            task(
                "text-generation",
                TextGenerationOutput | list[TextGenerationOutput],
                body=TextGenerationInput,
            ),
            task("text-to-image", "image/", body=TextToImageInput),
            task("image-to-text", ImageToTextOutput | list[ImageToTextOutput], raw=("image/",)),
            task("automatic-speech-recognition", AutomaticSpeechRecognitionOutput, raw=("audio/",)),
        ],
    )


# fal: fal-client types nothing (it passes dicts) and fal publishes one OpenAPI document per
# model endpoint, generated on request, so the queue API is not checked; the Platform APIs'
# model list is written here from fal's docs (docs.fal.ai/platform-apis/v1/models).
class FalModelMetadata(TypedDict, total=False):
    display_name: Required[str]
    category: Required[str]
    description: Required[str]
    status: Required[Literal["active", "deprecated"]]
    tags: Required[list[str]]
    updated_at: Required[str]
    is_favorited: Required[bool | None]
    thumbnail_url: Required[str]
    model_url: Required[str]
    date: Required[str]
    highlighted: Required[bool]
    pinned: Required[bool]
    thumbnail_animated_url: str
    github_url: str
    license_type: str
    group: dict[str, Any]
    kind: str
    duration_estimate: float
    training_endpoint_ids: list[str]
    inference_endpoint_ids: list[str]
    stream_url: str
    opengraph_image_url: str


class FalModel(TypedDict, total=False):
    endpoint_id: Required[str]
    metadata: FalModelMetadata
    openapi: dict[str, Any]


class FalModelsPage(TypedDict):
    models: list[FalModel]
    next_cursor: str | None
    has_more: bool


class FalModelsQuery(TypedDict, total=False):
    limit: Annotated[int, Field(ge=1)]
    cursor: str
    endpoint_id: str | list[str]
    q: str
    category: str
    status: Literal["active", "deprecated"]
    expand: str | list[str]


class FalErrorDetail(TypedDict):
    type: str
    message: str


class FalError(TypedDict):
    error: FalErrorDetail


def _fal() -> Api:
    return Api(
        "fal-platform (fal docs, written here)",
        [
            Operation(
                "models",
                "get",
                "/v1/models",
                query=FalModelsQuery,
                answers={200: FalModelsPage},
                error=FalError,
            )
        ],
    )


def _luma() -> Api:
    """Luma's API as the ``lumaai`` SDK (Stainless-generated from Luma's OpenAPI spec) types
    it: the ``*_create_params`` TypedDicts and the ``Generation`` model."""
    from lumaai.types import Generation
    from lumaai.types.generations import ImageCreateParams, VideoCreateParams

    created = {201: Generation}  # POST answers 201 Created with the generation
    base = "/dream-machine/v1/generations"
    return Api(
        "luma (lumaai SDK types)",
        [
            Operation(
                "image.create", "post", f"{base}/image", body=ImageCreateParams, answers=created
            ),
            Operation(
                "video.create", "post", f"{base}/video", body=VideoCreateParams, answers=created
            ),
            Operation("get", "get", f"{base}/{{id}}", answers={200: Generation}),
        ],
    )


@dataclass(frozen=True)
class Provider:
    """A provider's API types (by name) and the hosts its API answers on."""

    apis: dict[str, Callable[[], Api]]
    hosts: tuple[str, ...]
    #: Paths on those hosts that download generated media (no operation of the API).
    downloads: tuple[str, ...] = ()


PROVIDERS: dict[P, Provider] = {
    P.OPENAI: Provider({"openai": _openai}, ("api.openai.com",)),
    P.ANTHROPIC: Provider({"anthropic": _anthropic}, ("api.anthropic.com",)),
    P.REPLICATE: Provider({"replicate": _replicate}, ("api.replicate.com",)),
    P.RUNWAY: Provider({"runway": _runway}, ("api.dev.runwayml.com",)),
    P.ELEVENLABS: Provider({"elevenlabs": _elevenlabs}, ("api.elevenlabs.io",)),
    P.STABILITY: Provider({"stability": _stability}, ("api.stability.ai",)),
    P.AZURE: Provider(
        {"azure-4.0": _azure_4, "azure-3.2": _azure_32}, (".cognitiveservices.azure.com",)
    ),
    P.HUGGINGFACE: Provider({"hugging_face": _hugging_face}, ("router.huggingface.co",)),
    P.GOOGLE: Provider(
        {"gemini": _google},
        ("generativelanguage.googleapis.com",),
        # A Veo video's file URI (`files/{id}:download?alt=media`), fetched with the key.
        downloads=(r"/v1beta/files/[^/]+:download",),
    ),
    # Only fal's Platform APIs (the model list): its queue API has no typed description.
    P.FAL: Provider({"fal-platform": _fal}, ("api.fal.ai",)),
    P.LUMA: Provider({"luma": _luma}, ("api.lumalabs.ai",)),
}


# -- the cases: engine calls and the operations they must use ----------------------------------
class Story(BaseModel):
    """A tiny story."""

    title: str
    lines: list[str]


@dataclass
class Inputs:
    image: Image
    audio: Audio


Call = Callable[[RunContext, ModelConfig, Inputs], Awaitable[Any]]


def _text(ctx: RunContext, config: ModelConfig, _: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.TEXT_TO_TEXT, config.model.provider)
    return engine(ctx, "Once upon a time, a kite", config)


def _draw(ctx: RunContext, config: ModelConfig, _: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.TEXT_TO_IMAGE, config.model.provider)
    return engine(
        ctx, "a red kite over a harbour", config, output_name="kite.png", width=1024, height=768
    )


async def _draw_previews(ctx: RunContext, config: ModelConfig, given: Inputs) -> Any:
    """A drawing with a node's ``previews``, someone listening: streamed partial images."""
    from calliope_graph.context import streaming, token_sink

    reset = token_sink.set(lambda event: None)
    try:
        with streaming("picture", previews=2):
            return await _draw(ctx, config, given)
    finally:
        token_sink.reset(reset)


def _look(ctx: RunContext, config: ModelConfig, given: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.IMAGE_ANALYSIS, config.model.provider)
    return engine(ctx, given.image, config)


def _hear(ctx: RunContext, config: ModelConfig, given: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.AUDIO_TO_TEXT, config.model.provider)
    return engine(ctx, given.audio, config, language="en")


def _fill(ctx: RunContext, config: ModelConfig, _: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.MESSAGES_TO_OBJECT, config.model.provider)
    messages = [SystemMessage("You write tiny stories."), HumanMessage("A kite, in two lines.")]
    return engine(ctx, messages, config, Story)


def _speak(ctx: RunContext, config: ModelConfig, _: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.TEXT_TO_SPEECH, config.model.provider)
    return engine(ctx, "The kite rose over the harbour.", config, output_name="line.mp3")


def _film(ctx: RunContext, config: ModelConfig, given: Inputs) -> Awaitable[Any]:
    engine = get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, config.model.provider)
    return engine(ctx, given.image, "the kite climbs", config, output_name="kite.mp4")


def _draw_from(ctx: RunContext, config: ModelConfig, given: Inputs) -> Awaitable[Any]:
    """text_to_image with a reference image (the consistency port)."""
    engine = get_engine(Conversion.TEXT_TO_IMAGE, config.model.provider)
    return engine(
        ctx, "the same kite at dusk", config, output_name="again.png", width=1024, height=768,
        reference_images=[given.image],
    )  # fmt: skip


def _film_to(ctx: RunContext, config: ModelConfig, given: Inputs) -> Awaitable[Any]:
    """image_and_text_to_video with a last frame (the consistency port)."""
    engine = get_engine(Conversion.IMAGE_AND_TEXT_TO_VIDEO, config.model.provider)
    return engine(
        ctx, given.image, "the kite lands", config, output_name="land.mp4", last_frame=given.image
    )


async def _stream(ctx: RunContext, config: ModelConfig, _: Inputs) -> list[str]:
    from calliope_graph.engines import google

    return [delta async for delta in google.stream_text(ctx, "Once upon a time", config)]


def _list_models(ctx: RunContext, config: ModelConfig, _: Inputs) -> Awaitable[list[str]]:
    from calliope_graph.engines import fal, google

    listing = {P.GOOGLE: google.list_models, P.FAL: fal.list_models}
    return listing[config.model.provider](ctx)


@dataclass(frozen=True)
class Case:
    """One engine call and the spec operations (``spec name: operation id``) it must use:
    each of them at least once, and nothing else on the provider's API."""

    id: str
    provider: P
    model: str
    call: Call
    ops: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    variant: InferenceModelProviderVariant = InferenceModelProviderVariant.DEFAULT
    #: The failure the call ends in, when the case is about how a job is given up on.
    raises: type[Exception] | None = None
    #: The simulator's wall clock (a POSIX time), for a model served only until a date.
    when: float | None = None

    def config(self) -> ModelConfig:
        return ModelConfig(
            slug=f"spec-{self.id}",
            model_parameters=self.params,
            model=InferenceModel(
                slug=f"spec-{self.id}",
                provider=self.provider,
                provider_model_name=self.model,
                provider_api_variant=self.variant,
            ),
        )


CHAT = InferenceModelProviderVariant.OPENAI_CHAT_COMPLETION
CASES = [
    # OpenAI
    Case(
        "openai-chat",
        P.OPENAI,
        "gpt-4o-mini",
        _text,
        ("openai:chat.completions.create",),
        {"system_prompt": "Be brief.", "temperature": 0.7, "max_tokens": 200},
        CHAT,
    ),
    Case(
        "openai-completion",
        P.OPENAI,
        "gpt-3.5-turbo-instruct",
        _text,
        ("openai:completions.create",),
        {"temperature": 0.8, "max_tokens": 64},
        InferenceModelProviderVariant.OPENAI_COMPLETION,
    ),
    Case(
        "openai-vision",
        P.OPENAI,
        "gpt-4o",
        _look,
        ("openai:chat.completions.create",),
        {"detail": "low"},
        CHAT,
    ),
    Case(
        "openai-structured",
        P.OPENAI,
        "gpt-4o",
        _fill,
        ("openai:chat.completions.create",),
        {"temperature": 0.2},
        CHAT,
    ),
    Case(
        "openai-dall-e-3",
        P.OPENAI,
        "dall-e-3",
        _draw,
        ("openai:images.generate",),
        {"quality": "hd", "style": "vivid"},
    ),
    Case(
        "openai-dall-e-2-url",
        P.OPENAI,
        "dall-e-2",
        _draw,
        ("openai:images.generate",),
        {"response_format": "url"},
    ),
    Case(
        "openai-gpt-image-2",
        P.OPENAI,
        "gpt-image-2",
        _draw,
        ("openai:images.generate",),
        {"quality": "low", "output_format": "png"},
    ),
    Case(
        "openai-gpt-image-previews",
        P.OPENAI,
        "gpt-image-2",
        _draw_previews,
        ("openai:images.generate",),
        {"quality": "low", "output_format": "png"},
    ),
    Case(
        "openai-gpt-image",
        P.OPENAI,
        "gpt-image-1",
        _draw,
        ("openai:images.generate",),
        {"quality": "low", "background": "opaque", "output_format": "png"},
    ),
    Case(
        "openai-whisper",
        P.OPENAI,
        "whisper-1",
        _hear,
        ("openai:audio.transcriptions.create",),
        {"temperature": 0.0, "prompt": "Kites."},
    ),
    Case(
        "openai-tts",
        P.OPENAI,
        "tts-1",
        _speak,
        ("openai:audio.speech.create",),
        {"voice": "nova", "speed": 1.1},
    ),
    Case(
        "openai-tts-pcm",
        P.OPENAI,
        "gpt-4o-mini-tts",
        _speak,
        ("openai:audio.speech.create",),
        {"response_format": "pcm", "instructions": "Whisper."},
    ),
    Case(
        "openai-tts-opus",
        P.OPENAI,
        "tts-1-hd",
        _speak,
        ("openai:audio.speech.create",),
        {"response_format": "opus"},
    ),
    # Anthropic
    Case(
        "anthropic-text",
        P.ANTHROPIC,
        "claude-sonnet-4-5",
        _text,
        ("anthropic:messages.create",),
        # No temperature: the anthropic SDK dropped it (deprecated by the Messages API for
        # models after Opus 4.6: platform.claude.com/docs/en/about-claude/model-deprecations).
        {"system_prompt": "Be brief.", "max_tokens": 300},
    ),
    Case(
        "anthropic-vision", P.ANTHROPIC, "claude-sonnet-4-5", _look, ("anthropic:messages.create",)
    ),
    Case(
        "anthropic-structured",
        P.ANTHROPIC,
        "claude-sonnet-4-5",
        _fill,
        ("anthropic:messages.create",),
    ),
    # Replicate: a model's predictions vs a version's, created then polled
    Case(
        "replicate-model-text",
        P.REPLICATE,
        "meta/meta-llama-3-8b-instruct",
        _text,
        ("replicate:models.predictions.create", "replicate:predictions.get"),
        {"wait": 0},
    ),
    Case(
        "replicate-model-image",
        P.REPLICATE,
        "black-forest-labs/flux-schnell",
        _draw,
        ("replicate:models.predictions.create",),
    ),
    Case(
        "replicate-version-image",
        P.REPLICATE,
        "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
        _draw,
        ("replicate:predictions.create", "replicate:predictions.get"),
        {"wait": 0},
    ),
    Case(
        "replicate-cancel-on-timeout",
        P.REPLICATE,
        "black-forest-labs/flux-schnell",
        _draw,
        (
            "replicate:models.predictions.create",
            "replicate:predictions.get",
            "replicate:predictions.cancel",
        ),
        {"wait": 0, "poll_interval": 1, "poll_timeout": 1},
        raises=ProviderTimeoutError,
    ),
    Case(
        "replicate-version-vision",
        P.REPLICATE,
        "yorickvp/llava-13b:80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb",
        _look,
        ("replicate:predictions.create",),
    ),
    # Runway: a task created, then polled
    Case(
        "runway-video",
        P.RUNWAY,
        "gen4_turbo",
        _film,
        ("runway:image_to_video.create", "runway:tasks.retrieve"),
        {"duration": 5, "ratio": "1280:720", "seed": 7},
    ),
    Case(  # promptImage as [{uri, position: first}, {uri, position: last}]
        "runway-veo-last-frame",
        P.RUNWAY,
        "veo3.1",
        _film_to,
        ("runway:image_to_video.create", "runway:tasks.retrieve"),
        {"duration": 8, "seed": 7},
    ),
    # ElevenLabs
    Case(
        "elevenlabs-tts",
        P.ELEVENLABS,
        "eleven_multilingual_v2",
        _speak,
        ("elevenlabs:text_to_speech.convert",),
        {"stability": 0.5, "similarity_boost": 0.75, "language_code": "en", "seed": 3},
    ),
    Case(
        "elevenlabs-pcm",
        P.ELEVENLABS,
        "eleven_flash_v2_5",
        _speak,
        ("elevenlabs:text_to_speech.convert",),
        {"output_format": "pcm_24000", "voice": "JBFqnCBsd6RMkjVDRZzb", "speed": 1.1},
    ),
    # Stability: v1 (JSON) vs v2beta (multipart)
    Case(
        "stability-v1",
        P.STABILITY,
        "stable-diffusion-xl-1024-v1-0",
        _draw,
        ("stability:v1.textToImage",),
        {"cfg_scale": 7, "steps": 30, "style_preset": "anime"},
    ),
    Case(
        "stability-core",
        P.STABILITY,
        "core",
        _draw,
        ("stability:stable-image.generate.core",),
        {"style_preset": "photographic", "negative_prompt": "fog", "seed": 5},
    ),
    Case(
        "stability-ultra",
        P.STABILITY,
        "ultra",
        _draw,
        ("stability:stable-image.generate.ultra",),
    ),
    Case(
        "stability-sd3",
        P.STABILITY,
        "sd3.5-large",
        _draw,
        ("stability:stable-image.generate.sd3",),
        {"cfg_scale": 5},
    ),
    # Azure: Image Analysis 4.0 vs Computer Vision 3.2 (analyze, then OCR)
    Case(
        "azure-4.0",
        P.AZURE,
        "image-analysis-4.0",
        _look,
        ("azure-4.0:analyze",),
        {"gender_neutral_caption": True},
    ),
    Case(
        "azure-3.2",
        P.AZURE,
        "computer-vision-3.2",
        _look,
        ("azure-3.2:analyze", "azure-3.2:ocr"),
    ),
    # Google (Gemini API): generateContent for every Gemini model, streaming, Imagen's
    # :predict (while it was served), Veo's long-running operation, the model list
    Case(
        "google-text",
        P.GOOGLE,
        "gemini-3.8-flash",
        _text,
        ("gemini:models.generateContent",),
        {"system_prompt": "Be brief.", "temperature": 0.8, "max_output_tokens": 256},
    ),
    Case(
        "google-stream",
        P.GOOGLE,
        "gemini-3.8-flash",
        _stream,
        ("gemini:models.streamGenerateContent",),
        {"temperature": 0.5},
    ),
    Case("google-vision", P.GOOGLE, "gemini-3.8-flash", _look, ("gemini:models.generateContent",)),
    Case(
        "google-structured",
        P.GOOGLE,
        "gemini-3.1-pro-preview",
        _fill,
        ("gemini:models.generateContent",),
    ),
    Case(
        "google-transcribe", P.GOOGLE, "gemini-3.8-flash", _hear, ("gemini:models.generateContent",)
    ),
    Case(
        "google-image",
        P.GOOGLE,
        "gemini-3.1-flash-image",
        _draw,
        ("gemini:models.generateContent",),
    ),
    Case(
        "google-imagen",
        P.GOOGLE,
        "imagen-4.0-generate-001",
        _draw,
        ("gemini:models.predict",),
        when=datetime(2026, 6, 1, tzinfo=UTC).timestamp(),
    ),
    Case(
        "google-speech",
        P.GOOGLE,
        "gemini-3.8-flash-tts",
        _speak,
        ("gemini:models.generateContent",),
        {"voice": "Kore"},
    ),
    Case(
        "google-veo",
        P.GOOGLE,
        "veo-3.1-generate-preview",
        _film,
        ("gemini:models.predictLongRunning", "gemini:models.operations.get"),
        {"duration": 8, "aspect_ratio": "16:9"},
    ),
    Case("google-models", P.GOOGLE, "gemini-3.8-flash", _list_models, ("gemini:models.list",)),
    # fal: the model list (Platform APIs); Luma: the SDK's types
    Case("fal-models", P.FAL, "fal-ai/flux/schnell", _list_models, ("fal-platform:models",)),
    Case("luma-photon", P.LUMA, "photon-1", _draw, ("luma:image.create", "luma:get")),
    Case(
        "luma-ray",
        P.LUMA,
        "ray-2",
        _film,
        ("luma:video.create", "luma:get"),
        {"image_base_url": "https://media.example.com/story", "duration": 5},
    ),
    Case(  # reference images as image_ref [{url, weight}]
        "luma-photon-image-ref",
        P.LUMA,
        "photon-1",
        _draw_from,
        ("luma:image.create", "luma:get"),
        {"image_base_url": "https://media.example.com/story"},
    ),
    Case(  # reference images as character_ref.identity0.images
        "luma-photon-character-ref",
        P.LUMA,
        "photon-flash-1",
        _draw_from,
        ("luma:image.create", "luma:get"),
        {"image_base_url": "https://media.example.com/story", "reference_as": "character"},
    ),
    # Hugging Face (task payloads)
    Case(
        "hf-text",
        P.HUGGINGFACE,
        "mistralai/Mistral-7B-Instruct-v0.3",
        _text,
        ("hugging_face:text-generation",),
        {"max_new_tokens": 120, "temperature": 0.7},
    ),
    Case(
        "hf-image",
        P.HUGGINGFACE,
        "stabilityai/stable-diffusion-xl-base-1.0",
        _draw,
        ("hugging_face:text-to-image",),
        {"num_inference_steps": 20, "guidance_scale": 7.0},
    ),
    Case(
        "hf-caption",
        P.HUGGINGFACE,
        "Salesforce/blip-image-captioning-large",
        _look,
        ("hugging_face:image-to-text",),
    ),
    Case(
        "hf-asr",
        P.HUGGINGFACE,
        "openai/whisper-large-v3",
        _hear,
        ("hugging_face:automatic-speech-recognition",),
    ),
]


# -- running them -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def apis() -> dict[str, Api]:
    """Every provider's API types, built once for the session."""
    return {name: load() for p in PROVIDERS.values() for name, load in p.apis.items()}


def _on_api(provider: Provider, request: httpx.Request) -> bool:
    host = request.url.host
    return any(host == h or (h.startswith(".") and host.endswith(h)) for h in provider.hosts)


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    (tmp_path / "kite.png").write_bytes(image_bytes("a red kite over a harbour", 640, 480, "PNG"))
    (tmp_path / "line.wav").write_bytes(wav_bytes("the kite rose"))
    return Inputs(Image.open(tmp_path / "kite.png"), Audio.open(tmp_path / "line.wav"))


async def _exchanges(
    case: Case,
    sim: Simulator,
    clock: Any,
    out: Path,
    given: Inputs,
    *,
    raises: type[Exception] | None = None,
    keys: Any = None,
) -> list[tuple[httpx.Request, httpx.Response]]:
    """Run ``case`` against the simulator; every (request, answer) pair it exchanged."""
    pairs: list[tuple[httpx.Request, httpx.Response]] = []
    recorder = Recorder(sim)
    raises = raises or case.raises

    async def handler(request: httpx.Request) -> httpx.Response:
        response = await recorder(request)
        await response.aread()
        pairs.append((request, response))
        return response

    ctx = make_ctx(httpx.MockTransport(handler), keys or sim.keys(), clock, out)
    try:
        if raises is None:
            await case.call(ctx, case.config(), given)
        else:
            with pytest.raises(raises):
                await case.call(ctx, case.config(), given)
    finally:
        await ctx.aclose()
    return pairs


def check_exchanges(
    case: Case,
    apis: dict[str, Api],
    pairs: list[tuple[httpx.Request, httpx.Response]],
) -> set[str]:
    """Check each exchange with the provider's API against the case's operations; the
    operations seen. Raises SpecMismatch naming the first nonconforming request or answer."""
    provider = PROVIDERS[case.provider]
    by_spec: dict[str, list[str]] = {}
    for ref in case.ops:
        name, op_id = ref.split(":", 1)
        by_spec.setdefault(name, []).append(op_id)
    seen: set[str] = set()
    for request, response in pairs:
        if not _on_api(provider, request) or any(
            re.fullmatch(pattern, request.url.path) for pattern in provider.downloads
        ):
            continue  # a download of generated media (from the provider's CDN, or its API)
        problems: list[str] = []
        for name, allowed in by_spec.items():
            try:
                seen.add(f"{name}:{apis[name].check_exchange(request, response, allowed)}")
            except SpecMismatch as exc:
                if "is none of the operations" not in str(exc):
                    raise  # the right operation, not conforming
                problems.append(str(exc))
                continue
            break
        else:
            raise SpecMismatch("\n".join(problems))
    return seen


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_each_request_and_answer_conforms_to_the_providers_sdk_types(
    case: Case,
    apis: dict[str, Api],
    sim: Simulator,
    clock: Any,
    tmp_path: Path,
    inputs: Inputs,
) -> None:
    if case.when is not None:
        when = case.when
        sim = Simulator(sleep=clock, wall_clock=lambda: when)
    pairs = await _exchanges(case, sim, clock, tmp_path / "out", inputs)
    seen = check_exchanges(case, apis, pairs)
    assert seen == set(case.ops), f"operations used: {sorted(seen)}; expected {case.ops}"


#: One case per provider, for the answers the fake gives when things go wrong.
FIRST_CASES = list({case.provider: case for case in reversed(CASES)}.values())


@pytest.mark.parametrize("case", FIRST_CASES, ids=lambda c: c.provider.value)
async def test_the_fakes_error_answers_conform_to_the_spec_where_it_describes_them(
    case: Case,
    apis: dict[str, Api],
    sim: Simulator,
    clock: Any,
    tmp_path: Path,
    inputs: Inputs,
) -> None:
    """A rate limit and a server error (each retried, then the call succeeds), and a wrong
    key (the call fails): each error answer is checked against the status's schema."""
    for kind in ("rate_limit", "server_error"):
        sim.clear_faults()
        sim.add_fault(kind=kind, provider=case.provider.value, first_n=1, retry_after=0.5)
        pairs = await _exchanges(case, sim, clock, tmp_path / kind, inputs)
        assert any(r.status_code >= 400 for _, r in pairs), f"no {kind} answer was given"
        check_exchanges(case, apis, pairs)
    sim.clear_faults()
    wrong = sim.keys(**{_key_field(case.provider): SecretStr("wrong-key")})
    pairs = await _exchanges(
        case, sim, clock, tmp_path / "auth", inputs, raises=AuthenticationError, keys=wrong
    )
    assert any(r.status_code >= 400 for _, r in pairs)  # Google's is a 400 API_KEY_INVALID
    check_exchanges(case, apis, pairs)


def _key_field(provider: P) -> str:
    from calliope_graph.config import _ENV

    return _ENV[provider][0]


@pytest.fixture(autouse=True)
def _legacy_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some cases send the wire shapes of models OpenAI has shut down (DALL·E's sizes and
    ``url`` answers, gpt-image-1), which OpenAI-compatible servers still speak: the fake
    answers them here. Refusing retired models is tested in tests/test_lifecycle.py."""
    from calliope_graph.simulate.openai import OpenAIFake

    monkeypatch.setattr(OpenAIFake, "retired_models", frozenset())


def test_every_engine_conversion_has_a_spec_case() -> None:
    """A new engine (or conversion) cannot ship without its requests being checked."""
    from calliope_graph.engines import supported

    calls = {
        Conversion.TEXT_TO_TEXT: _text,
        Conversion.TEXT_TO_IMAGE: _draw,
        Conversion.IMAGE_ANALYSIS: _look,
        Conversion.AUDIO_TO_TEXT: _hear,
        Conversion.MESSAGES_TO_OBJECT: _fill,
        Conversion.TEXT_TO_SPEECH: _speak,
        Conversion.IMAGE_AND_TEXT_TO_VIDEO: _film,
    }
    covered = {(c.provider, c.call) for c in CASES}
    missing = [
        f"{conversion.value} on {provider.value}"
        for conversion, providers in supported().items()
        for provider in providers
        if provider not in NO_HTTP_SPEC and (provider, calls[conversion]) not in covered
    ]
    assert not missing, f"no spec-conformance case for: {', '.join(missing)}"


#: Engines whose conversions are not spec-checked, and why.
NO_HTTP_SPEC = {
    # No HTTP request of its own: it calls the chat model's client library.
    P.LANGCHAIN: "delegates to a LangChain chat model",
    # fal publishes one OpenAPI document per model endpoint, generated on request; none is
    # stored anywhere, and fal-client types nothing (the module docstring).
    P.FAL: "fal's queue API has no machine-readable spec here",
}


# -- the checker itself: what it catches ----------------------------------------------------------
def _json_request(url: str, body: Any, **kwargs: Any) -> httpx.Request:
    return httpx.Request("POST", url, json=body, **kwargs)


def _png(url: str) -> httpx.Request:
    return httpx.Request(
        "POST", url, content=b"\x89PNG", headers={"content-type": "application/octet-stream"}
    )


@pytest.mark.parametrize(
    ("api", "op", "request_", "named"),
    [
        pytest.param(
            "openai",
            "chat.completions.create",
            _json_request(
                "https://api.openai.com/v1/chat/completions",
                {
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": "hi"}],
                    "temperature": "hot",
                },
            ),
            "temperature",
            id="a-json-field-of-the-wrong-type",
        ),
        pytest.param(
            "openai",
            "chat.completions.create",
            _json_request("https://api.openai.com/v1/chat/completions", {"model": "gpt-4o"}),
            "messages: Field required",
            id="a-missing-required-field",
        ),
        pytest.param(
            "anthropic",
            "messages.create",
            _json_request(
                "https://api.anthropic.com/v1/messages",
                {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": [{"type": "text", "txt": "hi"}]}],
                },
            ),
            "txt",
            id="an-unknown-key-deep-inside-an-iterable",
        ),
        pytest.param(
            "elevenlabs",
            "text_to_speech.convert",
            _json_request(
                "https://api.elevenlabs.io/v1/text-to-speech/abc?voice=abc",
                {"text": "hi", "model_id": "eleven_v3"},
            ),
            "query voice: Extra inputs are not permitted",
            id="an-undeclared-query-parameter",
        ),
        pytest.param(
            "runway",
            "image_to_video.create",
            _json_request(
                "https://api.dev.runwayml.com/v1/image_to_video",
                {"model": "gen4_turbo", "promptImage": "https://x.test/a.png", "colour": "red"},
            ),
            "colour: Extra inputs are not permitted",
            id="a-body-field-the-sdk-does-not-know",
        ),
        pytest.param(
            "azure-3.2",
            "ocr",
            _png("https://x.cognitiveservices.azure.com/vision/v3.2/ocr?detectOrientation=maybe"),
            "detectOrientation",
            id="a-query-value-of-the-wrong-type",
        ),
        pytest.param(
            "azure-4.0",
            "analyze",
            _png(
                "https://x.cognitiveservices.azure.com/computervision/imageanalysis:analyze"
                "?api-version=2023-10-01&features=caption,faces"
            ),
            "'faces'",
            id="a-csv-query-item-outside-the-sdks-enum",
        ),
        pytest.param(
            "openai",
            "audio.transcriptions.create",
            httpx.Request(
                "POST",
                "https://api.openai.com/v1/audio/transcriptions",
                data={"model": "whisper-1", "temperature": "warm"},
                files={"file": ("a.wav", b"RIFF", "audio/wav")},
            ),
            "temperature",
            id="a-multipart-field-of-the-wrong-type",
        ),
        pytest.param(
            "stability",
            "stable-image.generate.core",
            httpx.Request(
                "POST",
                "https://api.stability.ai/v2beta/stable-image/generate/core",
                data={"prompt": "kite", "aspect_ratio": "4:3"},
                files={"none": (None, "")},
            ),
            "aspect_ratio",
            id="a-multipart-field-outside-its-enum",
        ),
        pytest.param(
            "stability",
            "v1.textToImage",
            _json_request(
                "https://api.stability.ai/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image",
                {"text_prompts": [{"text": "kite"}], "steps": 500},
            ),
            "steps",
            id="a-number-over-its-maximum",
        ),
        pytest.param(
            "gemini",
            "models.generateContent",
            _json_request(
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent",
                {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"temp": 1}},
            ),
            "temp",
            id="a-field-google-genai-does-not-know",
        ),
    ],
)
def test_a_request_the_sdk_types_forbid_is_refused_naming_the_field(
    apis: dict[str, Api], api: str, op: str, request_: httpx.Request, named: str
) -> None:
    checker = apis[api]
    request_.read()  # a multipart body is streamed until read
    matched = checker.match(request_, [op])
    with pytest.raises(SpecMismatch, match=re.escape(named)):
        checker.check_request(request_, matched)


def test_a_path_that_is_no_operation_of_the_case_is_refused(apis: dict[str, Api]) -> None:
    request = _json_request("https://api.openai.com/v1/chat/completion", {"model": "gpt-4o"})
    with pytest.raises(SpecMismatch, match="is none of the operations"):
        apis["openai"].match(request, ["chat.completions.create"])


def test_an_answer_missing_a_required_field_or_of_an_undeclared_type_is_refused(
    apis: dict[str, Api],
) -> None:
    runway = apis["runway"]
    create = runway.operations["image_to_video.create"]
    bare = httpx.Response(200, json={"id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"})
    with pytest.raises(SpecMismatch, match="estimatedCost: Field required"):
        runway.check_response(create, bare)
    html = httpx.Response(200, text="<html>", headers={"content-type": "text/html"})
    with pytest.raises(SpecMismatch, match="answered 'text/html'"):
        runway.check_response(create, html)
    with pytest.raises(SpecMismatch, match="status not among"):
        runway.check_response(create, httpx.Response(302))


def test_an_anthropic_error_answer_is_checked_against_the_sdks_error_type(
    apis: dict[str, Api],
) -> None:
    anthropic = apis["anthropic"]
    op = anthropic.operations["messages.create"]
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    anthropic.check_response(op, httpx.Response(429, json=error))
    with pytest.raises(SpecMismatch, match="error"):
        anthropic.check_response(op, httpx.Response(429, json={"detail": "slow down"}))


def test_an_azure_sdk_model_becomes_a_closed_type_of_its_wire_names() -> None:
    from azure.ai.vision.imageanalysis.models import ImageAnalysisResult

    result = azure_typed(ImageAnalysisResult)
    good = {
        "modelVersion": "2023-10-01",
        "metadata": {"width": 640, "height": 480},
        "captionResult": {"text": "a kite", "confidence": 0.9},
    }
    assert not _problems(result, good)
    assert _problems(result, {**good, "caption": {"text": "a kite"}})  # the Python name
    assert _problems(result, {"metadata": {"width": 640, "height": 480}})  # no modelVersion


def _problems(kind: Any, value: Any) -> list[str]:
    from _spec_check import validate

    return validate(kind, json.dumps(value).encode(), strict=True)


class _ToyParams(TypedDict, total=False):
    prompt: Required[str]
    aspect_ratio: Literal["1:1", "16:9"]


class _ToyAnswer(BaseModel):
    id: str
    state: Literal["queued", "completed"]


def test_an_api_is_checked_with_the_types_it_names() -> None:
    api = Api(
        "toy",
        [
            Operation("create", "post", "/v1/things", body=_ToyParams, answers={201: _ToyAnswer}),
            Operation("get", "get", "/v1/things/{id}", answers={200: _ToyAnswer}),
        ],
    )
    good = _json_request("https://toy.test/v1/things", {"prompt": "kite", "aspect_ratio": "1:1"})
    api.check_request(good, api.match(good, ["create"]))
    extra = _json_request("https://toy.test/v1/things", {"prompt": "kite", "colour": "red"})
    with pytest.raises(SpecMismatch, match="colour: Extra inputs are not permitted"):
        api.check_request(extra, api.match(extra, ["create"]))
    wrong = _json_request("https://toy.test/v1/things", {"aspect_ratio": "4:3"})
    with pytest.raises(SpecMismatch, match="prompt"):
        api.check_request(wrong, api.match(wrong, ["create"]))
    poll = httpx.Request("GET", "https://toy.test/v1/things/abc?verbose=1")
    with pytest.raises(SpecMismatch, match="'verbose' is not in the API"):
        api.check_request(poll, api.match(poll, ["get"]))
    op = api.operations["get"]
    api.check_response(op, httpx.Response(200, json={"id": "abc", "state": "queued"}))
    with pytest.raises(SpecMismatch, match="state"):
        api.check_response(op, httpx.Response(200, json={"id": "abc", "state": "lost"}))
    with pytest.raises(SpecMismatch, match="none of the operations"):
        api.match(httpx.Request("DELETE", "https://toy.test/v1/things/abc"), ["get"])


def test_each_server_sent_event_is_checked_against_the_sdks_chunk_type(
    apis: dict[str, Api],
) -> None:
    openai = apis["openai"]
    op = openai.operations["chat.completions.create"]
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "Once"}, "finish_reason": None}],
    }
    first = f"data: {json.dumps(chunk)}\n\n"
    sse = {"content-type": "text/event-stream"}
    openai.check_response(op, httpx.Response(200, text=first + "data: [DONE]\n\n", headers=sse))
    broken = {k: v for k, v in chunk.items() if k != "choices"}
    bad = first + f"data: {json.dumps(broken)}\n\n"
    with pytest.raises(SpecMismatch, match=r"event on line 3: choices: Field required"):
        openai.check_response(op, httpx.Response(200, text=bad, headers=sse))
