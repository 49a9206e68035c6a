"""The seed's functional API: same names, parameters and order as ``calliope.inference``.

Calliope's strategies can switch their imports to this module and keep working::

    from calliope_graph.inference import text_to_text_inference
    text = await text_to_text_inference(client, prompt, model_config, keys)

Each function runs the matching node kind on a :class:`RunContext` built around the caller's
``httpx.AsyncClient`` and ``KeysModel`` (the client is not closed) — or, with the offline
switch on (``CALLIOPE_SIMULATE=1``), around the default session's simulator. The behaviour the seed
wrote by hand is still here — censor-and-retry for images, Azure ∥ LLM image analysis with a
timeout on the LLM — but in flows it is an explicit branch of the graph instead (see
``graphs/webcam_story.yaml``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from calliope_graph.config import InferenceModelProvider, KeysModel, ModelConfig, catalog
from calliope_graph.context import RunContext
from calliope_graph.errors import (
    CalliopeError,
    ContentPolicyError,
    MediaError,
    ProviderTimeoutError,
)
from calliope_graph.media import Audio, Image, ImageAnalysis, MediaStore
from calliope_graph.nodes import (
    AnalyzeImage,
    AudioToText,
    CensorText,
    ImageAndTextToVideo,
    MessagesToObject,
    TextToImage,
    TextToSpeech,
    TextToText,
)
from calliope_graph.session import default_session

__all__ = [
    "audio_to_text_inference",
    "image_analysis_inference",
    "image_and_text_to_video_file_inference",
    "messages_to_object_inference",
    "text_to_image_file_inference",
    "text_to_speech_file_inference",
    "text_to_text_inference",
]

log = logging.getLogger("calliope_graph.inference")

T = TypeVar("T", bound=BaseModel)

#: The model config the seed's image analysis pairs with the multimodal LLM.
AZURE_ANALYSIS_CONFIG = "azure-vision-4.0"
#: The copy editor the seed's censor-and-retry uses.
CENSOR_CONFIG = "openai-gpt-6-luna"
#: Image generation attempts: the first, then up to two with censored text (the seed's 3).
IMAGE_ATTEMPTS = 3


def _context(
    httpx_client: httpx.AsyncClient, keys: KeysModel, out_dir: str | Path = "."
) -> RunContext:
    """The caller's client and keys — unless the default session simulates (the offline
    switch, ``CALLIOPE_SIMULATE=1``): then every call goes to its simulator, with its keys
    (the client given is not used; the simulator's holds no connection to close)."""
    session = default_session()
    if session.simulator is not None:
        return RunContext(
            client=session.new_client(),
            keys=session.keys,
            store=MediaStore(out_dir),
            limits=session.limits,
            simulated=True,
        )
    return RunContext(client=httpx_client, keys=keys, store=MediaStore(out_dir))


async def text_to_text_inference(
    httpx_client: httpx.AsyncClient,
    text: str,
    model_config: ModelConfig,
    keys: KeysModel,
) -> str:
    """Generate text from ``text`` with the model config's provider."""
    ctx = _context(httpx_client, keys)
    result = await TextToText(model_config).run(ctx, text=text)
    return str(result["text"])


async def text_to_image_file_inference(
    httpx_client: httpx.AsyncClient,
    text: str,
    output_image_filename: str,
    model_config: ModelConfig,
    keys: KeysModel,
    width: int | None = None,
    height: int | None = None,
    *,
    censor_model_config: ModelConfig | str = CENSOR_CONFIG,
    max_attempts: int = IMAGE_ATTEMPTS,
) -> str | None:
    """Draw ``text`` into ``output_image_filename``; return the file written.

    When the provider refuses the prompt (:class:`ContentPolicyError`), a copy editor
    softens it and the image is tried again, ``max_attempts`` in all. When every attempt is
    refused the result is None (as in the seed) and a warning is logged; any other failure
    raises. The extension may change to what the provider returned (``.jpeg``, ``.webp``).
    """
    target = Path(output_image_filename)
    ctx = _context(httpx_client, keys, target.parent)
    node = TextToImage(model_config, output_name=target.name, width=width, height=height)
    censor = CensorText(censor_model_config)
    prompt = text
    for attempt in range(1, max_attempts + 1):
        try:
            result = await node.run(ctx, prompt=prompt)
        except ContentPolicyError as exc:
            if attempt == max_attempts:
                log.warning(
                    "text_to_image: refused %d times by %s (%s); no image written",
                    attempt,
                    exc.provider,
                    exc,
                )
                return None
            prompt = str((await censor.run(ctx, text=prompt))["text"])
            log.info("text_to_image: retrying with censored text (attempt %d)", attempt + 1)
            continue
        image: Image = result["image"]
        return image.path
    return None


async def image_and_text_to_video_file_inference(
    httpx_client: httpx.AsyncClient,
    prompt_image_file: str,
    prompt_text: str,
    output_video_filename: str,
    model_config: ModelConfig,
    keys: KeysModel,
) -> str | None:
    """Animate ``prompt_image_file`` following ``prompt_text`` into ``output_video_filename``."""
    target = Path(output_video_filename)
    ctx = _context(httpx_client, keys, target.parent)
    node = ImageAndTextToVideo(model_config, output_name=target.name)
    result = await node.run(ctx, image=Image.open(prompt_image_file), text=prompt_text)
    return str(result["video"].path)


async def image_analysis_inference(
    httpx_client: httpx.AsyncClient,
    image_filename: str,
    b64_encoded_image: str | None,
    model_config: ModelConfig,
    keys: KeysModel,
    *,
    azure_model_config: ModelConfig | str | None = AZURE_ANALYSIS_CONFIG,
    llm_timeout: float = 30.0,
) -> dict[str, Any]:
    """Analyse an image with Azure Vision and the multimodal LLM in parallel, merged.

    The LLM (``model_config``) is bounded by ``llm_timeout`` seconds. Either analysis may
    fail without failing the whole (the failure is logged); when both fail, the LLM's error
    is raised. ``b64_encoded_image``, when given, is the image (``image_filename`` then only
    names it). Returns the seed's dict: description, captions, tags, objects, text,
    all_tags_and_objects.
    """
    path = Path(image_filename)
    ctx = _context(httpx_client, keys, path.parent if str(path.parent) else ".")
    image = _image_from(ctx, image_filename, b64_encoded_image)

    async def llm() -> ImageAnalysis:
        node = AnalyzeImage(model_config, name="llm_analysis")
        try:
            result = await asyncio.wait_for(node.run(ctx, image=image), llm_timeout)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"The multimodal LLM analysis took longer than {llm_timeout:g}s; "
                "raise llm_timeout or rely on the Azure analysis.",
                provider=model_config.provider.value,
            ) from None
        analysis: ImageAnalysis = result["analysis"]
        return analysis

    async def azure() -> ImageAnalysis:
        assert azure_model_config is not None
        node = AnalyzeImage(azure_model_config, name="azure_analysis")
        analysis: ImageAnalysis = (await node.run(ctx, image=image))["analysis"]
        return analysis

    tasks = [llm()]
    azure_too = model_config.provider is not InferenceModelProvider.AZURE
    if azure_model_config is not None and azure_too:
        tasks.append(azure())
    results = await asyncio.gather(*tasks, return_exceptions=True)
    analyses = [r for r in results if isinstance(r, ImageAnalysis)]
    for failure in (r for r in results if isinstance(r, BaseException)):
        if not isinstance(failure, CalliopeError | TimeoutError):
            raise failure
        log.warning("image analysis: one branch failed and was skipped: %s", failure)
    if not analyses:
        first = results[0]
        assert isinstance(first, BaseException)
        raise first
    # Lists are unioned; the fuller description and text win (see ImageAnalysis.merge).
    merged = analyses[0]
    for other in analyses[1:]:
        merged = merged.merge(other)
    return merged.to_dict()


def _image_from(ctx: RunContext, image_filename: str, b64_encoded_image: str | None) -> Image:
    if not b64_encoded_image:
        return Image.open(image_filename)
    try:
        data = base64.b64decode(b64_encoded_image, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(
            f"b64_encoded_image for {image_filename!r} is not valid base64: pass the file's "
            "bytes base64-encoded, or None to read image_filename.",
            path=image_filename,
        ) from None
    source = Path(image_filename)
    name = ctx.store.unique_name(
        source.stem or "image", source.suffix or ".png", seed=image_filename
    )
    return Image.open(ctx.store.write_bytes(f"inputs/{name}", data))


async def audio_to_text_inference(
    httpx_client: httpx.AsyncClient,
    input_audio_filename: str,
    language: str,
    keys: KeysModel,
    *,
    model_config: ModelConfig | str = "openai-gpt-transcribe",
) -> str:
    """Transcribe ``input_audio_filename`` (Whisper by default) in ``language``."""
    ctx = _context(httpx_client, keys)
    node = AudioToText(model_config, language=language or None)
    result = await node.run(ctx, audio=Audio.open(input_audio_filename))
    return str(result["text"])


async def messages_to_object_inference(
    httpx_client: httpx.AsyncClient,
    messages: Sequence[Any],
    model_config: ModelConfig,
    keys: KeysModel,
    response_model: type[T],
) -> T:
    """Fill ``response_model`` from chat ``messages`` (OpenAI-format dicts or langchain-core
    messages), validated."""
    ctx = _context(httpx_client, keys)
    node: MessagesToObject[T] = MessagesToObject(model_config, response_model=response_model)
    result = await node.run(ctx, messages=list(messages))
    obj: T = result["object"]
    return obj


async def text_to_speech_file_inference(
    httpx_client: httpx.AsyncClient,
    text: str,
    output_audio_filename: str,
    model_config: ModelConfig,
    keys: KeysModel,
    voice: str | None = None,
) -> str:
    """Read ``text`` aloud into ``output_audio_filename``; return the file written.

    The audio format follows the file name's extension (``.mp3``, ``.wav``, ``.flac``...)
    unless the model config sets one; the extension may change to the format the provider
    answered in (raw PCM is saved as ``.wav``). ``voice`` overrides the config's voice (an
    OpenAI voice name or an ElevenLabs voice id). Failures raise taxonomy errors (a refusal
    is a :class:`ContentPolicyError`).
    """
    target = Path(output_audio_filename)
    ctx = _context(httpx_client, keys, target.parent)
    node = TextToSpeech(model_config, output_name=target.name, voice=voice)
    result = await node.run(ctx, text=text)
    return str(result["audio"].path)


def model_config(name: str) -> ModelConfig:
    """A built-in model config by catalog name (``openai-gpt-6-luna``, ``stability-core``...)."""
    return catalog.get(name)
