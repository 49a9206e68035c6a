"""TextToSpeech: a speech engine reads text aloud into an audio file in the media store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from calliope_graph.context import RunContext
from calliope_graph.engines import Conversion, get_engine
from calliope_graph.engines._speech import speech_bytes
from calliope_graph.nodes._base import Node, Port, PortType, register_node


class TextToSpeechParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    voice: str | None = Field(default=None, examples=["alloy"])
    """The provider's voice: an OpenAI voice name (``alloy``, ``coral``...) or an ElevenLabs
    voice id. Default: the model config's ``voice``."""
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    """OpenAI's audio format (``pcm`` is saved as WAV). Default: the output name's extension,
    else mp3."""
    output_format: str | None = Field(
        default=None, examples=["mp3_44100_128"], pattern=r"^[a-z0-9]+_\d+(_\d+)?$"
    )
    """ElevenLabs' ``codec_samplerate[_bitrate]`` (``mp3_44100_128``, ``pcm_24000``,
    ``wav_44100``...). Default: the output name's extension, else ``mp3_44100_128``."""
    speed: float | None = Field(default=None, ge=0.25, le=4.0, examples=[1.0])
    """Speaking speed, 1.0 normal (OpenAI takes 0.25-4.0, ElevenLabs 0.7-1.2)."""
    instructions: str | None = Field(
        default=None, max_length=4096, examples=["Warm and slow, like a bedtime story."]
    )
    """How to speak (gpt-4o-mini-tts only): tone, pace, accent."""
    output_name: str | None = Field(default=None, examples=["narration.mp3"])
    """File name in the output directory (default: the node's name; the extension follows
    the audio format)."""


@register_node
class TextToSpeech(Node):
    kind = "text_to_speech"
    description = "Read text aloud into an audio file"
    conversion = Conversion.TEXT_TO_SPEECH
    needs_model = True
    default_model = "elevenlabs-multilingual-v2"
    Params = TextToSpeechParams
    inputs = (Port("text", PortType.TEXT, description="what to say"),)
    outputs = (Port("audio", PortType.AUDIO),)

    def answer_bytes(self, ctx: RunContext, inputs: Mapping[str, Any]) -> int:
        """The audio's bytes, from the text's length and the format's bitrate (checked free
        before the provider is paid: ``flow/_room.py``)."""
        params = self.model_config_for(ctx).parameters
        audio_format = (
            self.params.output_format
            or self.params.response_format
            or params.get("output_format")
            or params.get("response_format")
            or PurePosixPath(self.params.output_name or "").suffix
            or "mp3"
        )
        speed = self.params.speed or params.get("speed") or 1.0
        return speech_bytes(str(inputs.get("text", "")), str(audio_format), speed=float(speed))

    async def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        config = self.model_config_for(ctx)
        overrides = self.params.model_dump(
            include={"response_format", "output_format", "speed", "instructions"},
            exclude_none=True,
        )
        if overrides:
            config = config.with_parameters(**overrides)
        engine = get_engine(Conversion.TEXT_TO_SPEECH, config.provider)
        audio = await engine(
            ctx,
            str(inputs["text"]),
            config,
            output_name=self.params.output_name or self.output_stem(),
            voice=self.params.voice,
        )
        return {"audio": audio}
