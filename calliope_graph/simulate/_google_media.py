"""The Gemini API fake's shared helpers and media endpoints (see
:mod:`calliope_graph.simulate.google`; split out of it to keep modules under 600 lines)."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import httpx
from PIL import UnidentifiedImageError

from calliope_graph.media import pil_open
from calliope_graph.simulate._content import (
    analysis_answer,
    digest,
    image_bytes,
    json_for_schema,
    story_text,
)
from calliope_graph.simulate._core import (
    Failure,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._google_tables import (
    _IMAGE_RATIOS,
    _IMAGEN_RATIOS,
    _ORIGIN,
    _VERSION,
    _VOICES,
    _Operation,
)
from calliope_graph.simulate._stream import sse, sse_response
from calliope_graph.simulate._video import mp4_bytes, video_size


class GoogleFakeBase(ProviderFake):
    """What the Gemini API fake's endpoints share (errors, state, image checks), and its
    media endpoints: Imagen ``:predict``, Veo ``:predictLongRunning`` with its operations
    and files, and the image, speech and streamed shapes of ``generateContent`` answers."""

    def _error(self, status: int, message: str) -> Reject:
        return Reject(self.envelope(Failure(status, None, message)))

    def _bad(self, message: str) -> Reject:
        return self._error(400, message)

    # -- state ------------------------------------------------------------------------------
    def _state(self, key: str) -> dict[str, Any]:
        box: dict[str, Any] = self.sim.state(self.name).setdefault(key, {})
        return box

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    @staticmethod
    def _decodes(data: bytes) -> bool:
        try:
            with pil_open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            return False
        return True

    def _voice(self, gen: dict[str, Any]) -> str:
        speech = gen.get("speechConfig") or {}
        voice = ((speech.get("voiceConfig") or {}).get("prebuiltVoiceConfig") or {}).get(
            "voiceName"
        )
        if voice is not None and voice not in _VOICES:
            raise self._bad(
                f"Voice name {voice} is not supported. Allowed voice names are: "
                + ", ".join(sorted(v.lower() for v in _VOICES))
            )
        return str(voice or "Kore")

    def _image_size(self, gen: dict[str, Any]) -> tuple[int, int]:
        image_config = gen.get("imageConfig") or {}
        ratio = str(image_config.get("aspectRatio") or "1:1")
        if ratio not in _IMAGE_RATIOS:
            raise self._bad(
                f"Unsupported aspect ratio: {ratio}. Supported: " + ", ".join(sorted(_IMAGE_RATIOS))
            )
        w, h = (int(v) for v in ratio.split(":"))
        scale = 1024 / max(w, h)
        return max(16, round(w * scale)) & ~1, max(16, round(h * scale)) & ~1

    def _text(
        self, prompt: str, images: list[bytes], audio: list[bytes], gen: dict[str, Any], name: str
    ) -> str:
        schema = (
            gen.get("responseJsonSchema")
            or gen.get("_responseJsonSchema")
            or gen.get("responseSchema")
        )
        seed = digest(prompt, name, *images, *audio)
        if isinstance(schema, dict):
            return json.dumps(json_for_schema(schema, seed))
        if images and gen.get("responseMimeType") == "application/json":
            return json.dumps(analysis_answer(images[-1]))
        if audio:
            # What was "said" depends on the audio bytes only (as the Whisper fake does).
            return story_text(
                "lantern garden harbour meadow window", sentences=1, model=digest(audio[-1])
            )
        if gen.get("responseMimeType") == "application/json":
            return json.dumps({"text": story_text(prompt, model=name)})
        return story_text(prompt, model=name)

    def _answer(
        self,
        answer: dict[str, Any],
        parts: list[dict[str, Any]],
        method: str,
        request: httpx.Request,
    ) -> httpx.Response:
        if method == "generateContent":
            return httpx.Response(200, json=answer)
        chunks = self._chunks(answer, parts)
        if request.url.params.get("alt") == "sse":
            # Google's SSE framing: one `data: <json>` line per chunk, CRLF-separated; paced
            # (time to first token) and breakable (stream_break) by simulate/_stream.py.
            events = [sse(c, newline="\r\n") for c in chunks]
            return sse_response(self, request, events)
        return httpx.Response(200, json=chunks)

    @staticmethod
    def _chunks(answer: dict[str, Any], parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answer as stream chunks: text in a few pieces, the finish reason and the
        usage on the last."""
        text = parts[0].get("text") if len(parts) == 1 else None
        candidates = answer.get("candidates")
        if not isinstance(text, str) or not candidates:
            return [answer]
        words = text.split(" ")
        step = max(1, len(words) // 4)
        pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
        head = {k: v for k, v in answer.items() if k not in ("candidates", "usageMetadata")}
        usage = answer["usageMetadata"]
        chunks = []
        for i, piece in enumerate(pieces):
            candidate: dict[str, Any] = {
                "content": {"parts": [{"text": piece}], "role": "model"},
                "index": 0,
            }
            chunk: dict[str, Any] = {"candidates": [candidate], **head}
            if i == len(pieces) - 1:
                candidate["finishReason"] = candidates[0].get("finishReason", "STOP")
                chunk["usageMetadata"] = usage
            else:
                chunk["usageMetadata"] = {
                    "promptTokenCount": usage["promptTokenCount"],
                    "totalTokenCount": usage["promptTokenCount"],
                    "promptTokensDetails": usage["promptTokensDetails"],
                }
            chunks.append(chunk)
        return chunks

    # Imagen -------------------------------------------------------------------------------
    def _instance(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        instances = body.get("instances")
        for key in body:
            if key not in ("instances", "parameters"):
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
                )
        if (
            not isinstance(instances, list)
            or len(instances) != 1
            or not isinstance(instances[0], dict)
        ):
            raise self._bad("* PredictRequest.instances: exactly one instance is required.")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise self._bad(
                "Invalid value at 'parameters' (type.googleapis.com/"
                "google.protobuf.Value), expected an object"
            )
        return instances[0], parameters

    def _predict(self, request: httpx.Request, name: str, body: dict[str, Any]) -> httpx.Response:
        instance, parameters = self._instance(body)
        prompt = instance.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._bad("Prompt is required: instances[0].prompt is empty.")
        ratio = str(parameters.get("aspectRatio") or "1:1")
        if ratio not in _IMAGEN_RATIOS:
            raise self._bad(f"Unsupported aspect ratio: {ratio}")
        count = parameters.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise self._bad("sampleCount must be an integer from 1 to 4.")
        if self.sim.blocked(self, request, prompt):
            reason = (
                "Unable to show generated images. All images were filtered out because "
                "they violated Vertex AI's usage guidelines. You will not be charged "
                "for blocked images. Try rephrasing the prompt. Support codes: 39322892"
            )
            predictions = (
                [{"raiFilteredReason": reason}] if parameters.get("includeRaiReason") else []
            )
            return httpx.Response(200, json={"predictions": predictions} if predictions else {})
        if self.sim.emptied(self, request, prompt):
            return httpx.Response(200, json={})
        w, h = (int(v) for v in ratio.split(":"))
        scale = 1024 / max(w, h)
        size = self.sim.drawn_size(round(w * scale), round(h * scale))
        predictions = [
            {
                "mimeType": "image/png",
                "bytesBase64Encoded": base64.b64encode(image_bytes(f"{prompt}|{i}", *size)).decode(
                    "ascii"
                ),
            }
            for i in range(count)
        ]
        return httpx.Response(200, json={"predictions": predictions})

    # Veo ------------------------------------------------------------------------------------
    def _predict_long(
        self, request: httpx.Request, name: str, body: dict[str, Any]
    ) -> httpx.Response:
        instance, parameters = self._instance(body)
        prompt = instance.get("prompt")
        image = instance.get("image")
        if prompt is not None and not isinstance(prompt, str):
            raise self._bad("Invalid value at 'instances[0].prompt', expected a string.")
        if not prompt and image is None:
            raise self._bad("A prompt or an image is required.")
        for key in instance:  # the SDK's GenerateVideosParameters/Config instance fields
            if key not in ("prompt", "image", "lastFrame", "referenceImages", "video"):
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'instances[0]': Cannot find field."
                )
        last = instance.get("lastFrame")
        if last is not None and image is None:
            raise self._bad("instances[0].lastFrame needs instances[0].image (the first frame).")
        if last is not None and (
            not isinstance(last, dict)
            or not last.get("bytesBase64Encoded")
            or last.get("mimeType") not in ("image/png", "image/jpeg", "image/webp")
        ):
            raise self._bad("instances[0].lastFrame: bytesBase64Encoded and mimeType are required.")
        seed = parameters.get("seed")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= 4294967295):
            raise self._bad("Invalid value at 'parameters.seed' (TYPE_UINT32)")
        raw: bytes | None = None
        if image is not None:
            if not isinstance(image, dict) or not image.get("bytesBase64Encoded"):
                raise self._bad("instances[0].image: bytesBase64Encoded and mimeType are required.")
            if image.get("mimeType") not in ("image/png", "image/jpeg", "image/webp"):
                raise self._bad(f"Unsupported image mime type: {image.get('mimeType')}")
            try:
                raw = base64.b64decode(str(image["bytesBase64Encoded"]), validate=True)
            except (binascii.Error, ValueError):
                raise self._bad(
                    "instances[0].image.bytesBase64Encoded: Base64 decoding failed"
                ) from None
            if not self._decodes(raw):
                raise self._bad("Unable to process input image.")
        ratio = str(parameters.get("aspectRatio") or "16:9")
        if ratio not in ("16:9", "9:16"):
            raise self._bad(f"Aspect ratio {ratio} is not supported; use 16:9 or 9:16.")
        seconds = parameters.get("durationSeconds", 8)
        if seconds not in (4, 6, 8):
            raise self._bad(f"durationSeconds {seconds} is out of range: 4, 6 or 8 seconds.")
        for key in parameters:
            if key not in (
                "aspectRatio",
                "durationSeconds",
                "resolution",
                "personGeneration",
                "negativePrompt",
                "seed",
                "numberOfVideos",
                "generateAudio",
            ):
                raise self._bad(
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'parameters': Cannot find field."
                )
        text = prompt or ""
        op_id = digest("google-operation", str(self.sim.seed), str(self._seq()))[:12]
        self._state("operations")[op_id] = _Operation(
            id=op_id,
            model=name,
            prompt=text,
            image=raw,
            ratio=ratio,
            seconds=int(seconds),
            blocked=self.sim.blocked(self, request, text),
            emptied=self.sim.emptied(self, request, text),
        )
        return httpx.Response(200, json={"name": f"models/{name}/operations/{op_id}"})

    def _operation(self, model: str, op_id: str) -> httpx.Response:
        operation: _Operation | None = self._state("operations").get(op_id)
        if operation is None or operation.model != model:
            raise self._error(404, f"Operation models/{model}/operations/{op_id} not found.")
        operation.polls += 1
        name = f"models/{model}/operations/{op_id}"
        if operation.polls < max(int(self.sim.poll_steps), 1):
            return httpx.Response(200, json={"name": name})
        result: dict[str, Any]
        if operation.blocked:
            result = {
                "raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": [
                    "Your prompt could not be submitted: it may violate our policies. Try "
                    "rephrasing it. Support codes: 29310472"
                ],
            }
        elif operation.emptied:
            result = {}
        else:
            if not operation.uri:
                operation.uri = self._render(operation)
            result = {"generatedSamples": [{"video": {"uri": operation.uri}}]}
        return httpx.Response(
            200,
            json={
                "name": name,
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                    "PredictLongRunningResponse",
                    "generateVideoResponse": result,
                },
            },
        )

    def _render(self, operation: _Operation) -> str:
        w, h = (16, 9) if operation.ratio == "16:9" else (9, 16)
        width, height = video_size(w * 10, h * 10)
        video = mp4_bytes(
            f"{operation.prompt}|{operation.id}",
            width=width,
            height=height,
            seconds=operation.seconds,
            image=operation.image,
        )
        file_id = digest(video)[:12]
        self._state("files")[file_id] = video
        return f"{_ORIGIN}/{_VERSION}/files/{file_id}:download?alt=media"

    def _file(self, file_id: str) -> httpx.Response:
        video = self._state("files").get(file_id)
        if video is None:
            raise self._error(404, f"File files/{file_id} not found.")
        return httpx.Response(
            200,
            content=video,
            headers={"content-type": "video/mp4", "content-length": str(len(video))},
        )
