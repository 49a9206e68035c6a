"""Model configuration, keys and the catalog of named model configs.

The shapes follow Calliope's: a :class:`ModelConfig` names an :class:`InferenceModel`
(provider, provider model name, API variant) and both carry ``model_parameters``; the
parameters sent to a provider are the model's, overridden by the config's.

:class:`KeysModel` holds secrets as :class:`pydantic.SecretStr`, so they never show in a
repr, a log line or a serialised checkpoint. :meth:`KeysModel.from_env` reads the
conventional environment variables, including a base-URL override per provider, so
OpenAI-compatible servers (Ollama, vLLM, llama.cpp) and Anthropic-compatible ones just work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from calliope_graph._providers import InferenceModelProvider
from calliope_graph._yaml import DocumentBoundsError, check_document
from calliope_graph.errors import ConfigurationError
from calliope_graph.limits import LimitSpec, parse_limit_mapping

__all__ = [
    "DEFAULT_BASE_URLS",
    "InferenceModel",
    "InferenceModelProvider",
    "InferenceModelProviderVariant",
    "KeysModel",
    "ModelCatalog",
    "ModelConfig",
    "ModelPrice",
    "catalog",
]


class InferenceModelProviderVariant(StrEnum):
    DEFAULT = "default"
    OPENAI_COMPLETION = "openai_completion"
    OPENAI_CHAT_COMPLETION = "openai_chat_completion"


class ModelPrice(BaseModel):
    """A model's list prices in USD, for estimating what runs cost (batch summaries,
    ``--budget``). Each field is optional: give the ones the provider bills by.

    ``per_image`` is one price, or a table keyed ``"<size>/<quality>"``, ``"<size>"``,
    ``"<quality>"`` or ``"default"`` (looked up in that order), e.g.
    ``{"1024x1024/standard": 0.04, "1024x1024/hd": 0.08, "default": 0.04}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_1k_tokens: float | None = None
    """Per 1,000 input (prompt) tokens."""
    output_per_1k_tokens: float | None = None
    """Per 1,000 output (completion) tokens."""
    per_image: float | dict[str, float] | None = None
    """Per generated image (by size and quality when a table)."""
    per_video_second: float | None = None
    """Per second of generated video."""
    per_audio_minute: float | None = None
    """Per minute of input audio (transcription)."""
    per_request: float | None = None
    """Per successful request (analysis APIs billed per transaction)."""
    source: str = ""
    """Where and when the prices were read."""

    def image(self, size: str | None = None, quality: str | None = None) -> float | None:
        """The price of one image of ``size`` (``"1024x1024"``) and ``quality``."""
        table = self.per_image
        if table is None or isinstance(table, float | int):
            return None if table is None else float(table)
        keys = [f"{size}/{quality}"] if size and quality else []
        keys += [k for k in (size, quality) if k] + ["default"]
        return next((float(table[k]) for k in keys if k in table), None)


class InferenceModel(BaseModel):
    """A provider's model: ``provider_model_name`` is what the provider's API calls it."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    slug: str
    provider: InferenceModelProvider
    provider_model_name: str
    provider_api_variant: InferenceModelProviderVariant = InferenceModelProviderVariant.DEFAULT
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    price: ModelPrice | None = None
    """List prices, for cost estimates (None: unknown; a batch reports its cost as unknown)."""
    deprecated_on: date | None = None
    """When the provider announced the model's retirement (see :mod:`calliope_graph.lifecycle`)."""
    shutdown_on: date | None = None
    """From this day the provider refuses the model: flows naming it are refused."""
    replacement: str | None = None
    """The catalog name to use instead (named in warnings and refusals)."""
    kinds: tuple[str, ...] | None = None
    """The node kinds the model serves, when narrower than its provider's engines (a speech
    model does not write text): e.g. ``[text_to_speech]``. None: all its provider serves."""
    takes: tuple[str, ...] = ()
    """The optional consistency ports the model can take (``reference_images``, ``seed``,
    ``last_frame``): validation refuses one wired to a model that does not list it, naming
    the catalog models that do (engines/_registry.py ``config_problem``)."""
    base_url: str | None = None
    """Where this one model is served (an OpenAI-compatible server: Ollama, vLLM,
    llama.cpp), overriding the provider's base URL for this model only."""
    api_key_env: str | None = None
    """The environment variable holding this model's key (with ``base_url``). A model with a
    ``base_url`` and no ``api_key_env`` sends no key (a local server needs none)."""

    def kind_problem(self, conversion: str) -> str | None:
        """Why the model cannot do ``conversion`` by its catalog ``kinds`` (None: it can)."""
        if self.kinds is None or conversion in self.kinds:
            return None
        return (
            f"model {self.slug!r} serves only {', '.join(self.kinds)}, not {conversion}: choose "
            f"one that does (`calliope-graph models --kind ...` lists them)"
        )

    @model_validator(mode="after")
    def _own_server(self) -> InferenceModel:
        """A model's own ``base_url`` works where engines honour it; its key variable is
        remembered for redaction."""
        if self.base_url and self.provider not in _OWN_SERVER_PROVIDERS:
            raise ValueError(
                f"base_url on a model is for OpenAI- or Anthropic-compatible servers (provider "
                f"openai or anthropic), not {self.provider.value}: set that provider's base "
                "URL variable instead"
            )
        if self.api_key_env:
            _MODEL_KEY_VARS.add(self.api_key_env)
        return self


#: Providers whose engines send a model to its own ``base_url`` (compatible servers).
_OWN_SERVER_PROVIDERS = frozenset({InferenceModelProvider.OPENAI, InferenceModelProvider.ANTHROPIC})

#: Environment variables named by models' ``api_key_env`` (names, not values): their values
#: are redacted like the providers' keys (:meth:`KeysModel.secrets`).
_MODEL_KEY_VARS: set[str] = set()


class ModelConfig(BaseModel):
    """A named use of a model, with its own parameters layered over the model's."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    slug: str
    description: str = ""
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    model: InferenceModel

    @property
    def provider(self) -> InferenceModelProvider:
        return self.model.provider

    @property
    def price(self) -> ModelPrice | None:
        """The model's list prices (see :class:`ModelPrice`)."""
        return self.model.price

    @property
    def parameters(self) -> dict[str, Any]:
        """The merged parameters: the model's, then the config's on top."""
        return {**self.model.model_parameters, **self.model_parameters}

    def with_parameters(self, **overrides: Any) -> ModelConfig:
        """A copy whose config-level parameters are updated with ``overrides``."""
        return self.model_copy(update={"model_parameters": {**self.model_parameters, **overrides}})


#: Where each provider lives unless the environment or the keys say otherwise.
DEFAULT_BASE_URLS: dict[InferenceModelProvider, str] = {
    InferenceModelProvider.OPENAI: "https://api.openai.com/v1",
    InferenceModelProvider.AZURE: "https://calliope.cognitiveservices.azure.com",
    InferenceModelProvider.STABILITY: "https://api.stability.ai",
    InferenceModelProvider.REPLICATE: "https://api.replicate.com",
    InferenceModelProvider.HUGGINGFACE: "https://router.huggingface.co/hf-inference",
    InferenceModelProvider.RUNWAY: "https://api.dev.runwayml.com",
    InferenceModelProvider.ANTHROPIC: "https://api.anthropic.com",
    InferenceModelProvider.ELEVENLABS: "https://api.elevenlabs.io",
    # fal's queue API (docs.fal.ai/model-endpoints/queue); fal-client builds the same URLs
    # from FAL_QUEUE_RUN_HOST (fal-ai/fal, projects/fal_client/src/fal_client/auth.py).
    InferenceModelProvider.FAL: "https://queue.fal.run",
    # The Dream Machine API (lumaai SDK, src/lumaai/_client.py: default base URL).
    InferenceModelProvider.LUMA: "https://api.lumalabs.ai/dream-machine/v1",
    # The Gemini API (Google AI Studio keys); engines add the version path (/v1beta/...).
    InferenceModelProvider.GOOGLE: "https://generativelanguage.googleapis.com",
}

# provider -> (key field, key env var, base-url field, base-url env var)
_ENV: dict[InferenceModelProvider, tuple[str, str, str, str]] = {
    InferenceModelProvider.OPENAI: (
        "openai_api_key",
        "OPENAI_API_KEY",
        "openai_base_url",
        "OPENAI_BASE_URL",
    ),
    InferenceModelProvider.AZURE: (
        "azure_vision_key",
        "AZURE_VISION_KEY",
        "azure_vision_endpoint",
        "AZURE_VISION_ENDPOINT",
    ),
    InferenceModelProvider.STABILITY: (
        "stability_api_key",
        "STABILITY_API_KEY",
        "stability_base_url",
        "STABILITY_BASE_URL",
    ),
    InferenceModelProvider.REPLICATE: (
        "replicate_api_token",
        "REPLICATE_API_TOKEN",
        "replicate_base_url",
        "REPLICATE_BASE_URL",
    ),
    InferenceModelProvider.HUGGINGFACE: (
        "huggingface_api_key",
        "HF_TOKEN",
        "huggingface_base_url",
        "HF_BASE_URL",
    ),
    InferenceModelProvider.RUNWAY: (
        "runway_api_key",
        "RUNWAYML_API_SECRET",
        "runway_base_url",
        "RUNWAYML_BASE_URL",
    ),
    InferenceModelProvider.ANTHROPIC: (
        "anthropic_api_key",
        "ANTHROPIC_API_KEY",
        "anthropic_base_url",
        "ANTHROPIC_BASE_URL",
    ),
    InferenceModelProvider.ELEVENLABS: (
        "elevenlabs_api_key",
        "ELEVENLABS_API_KEY",
        "elevenlabs_base_url",
        "ELEVENLABS_BASE_URL",
    ),
    # fal-client reads FAL_KEY and sends `Authorization: Key <FAL_KEY>` (fal-ai/fal,
    # projects/fal_client/src/fal_client/auth.py). FAL_BASE_URL is ours: the queue's origin.
    InferenceModelProvider.FAL: (
        "fal_api_key",
        "FAL_KEY",
        "fal_base_url",
        "FAL_BASE_URL",
    ),
    # The lumaai SDK reads LUMAAI_API_KEY (a Bearer token) and LUMAAI_BASE_URL
    # (lumalabs/lumaai-python, src/lumaai/_client.py).
    InferenceModelProvider.LUMA: (
        "luma_api_key",
        "LUMAAI_API_KEY",
        "luma_base_url",
        "LUMAAI_BASE_URL",
    ),
    # GOOGLE_API_KEY is read too, and wins over GEMINI_API_KEY when both are set, as the
    # google-genai SDK does (googleapis/python-genai google/genai/_api_client.py,
    # get_env_api_key); the SDK's own base-URL variable GOOGLE_GEMINI_BASE_URL is read when
    # GEMINI_BASE_URL is not set (google/genai/_base_url.py). See KeysModel.from_env.
    InferenceModelProvider.GOOGLE: (
        "google_api_key",
        "GEMINI_API_KEY",
        "google_base_url",
        "GEMINI_BASE_URL",
    ),
}


class KeysModel(BaseModel):
    """API keys (as secrets) and per-provider base URLs.

    Build it from the environment with :meth:`from_env`, or pass values directly. A key may
    be absent until an engine needs it; :meth:`require` then raises a
    :class:`ConfigurationError` naming the variable to set.
    """

    model_config = ConfigDict(frozen=True)

    openai_api_key: SecretStr | None = None
    azure_vision_key: SecretStr | None = None
    stability_api_key: SecretStr | None = None
    replicate_api_token: SecretStr | None = None
    huggingface_api_key: SecretStr | None = None
    runway_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    elevenlabs_api_key: SecretStr | None = None
    fal_api_key: SecretStr | None = None
    luma_api_key: SecretStr | None = None
    google_api_key: SecretStr | None = None

    openai_base_url: str | None = None
    azure_vision_endpoint: str | None = None
    stability_base_url: str | None = None
    replicate_base_url: str | None = None
    huggingface_base_url: str | None = None
    runway_base_url: str | None = None
    anthropic_base_url: str | None = None
    elevenlabs_base_url: str | None = None
    fal_base_url: str | None = None
    luma_base_url: str | None = None
    google_base_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeysModel:
        """Keys and base URLs from the conventional environment variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for key_field, key_var, url_field, url_var in _ENV.values():
            if env.get(key_var):
                values[key_field] = SecretStr(env[key_var])
            if env.get(url_var):
                values[url_field] = env[url_var]
        # Hugging Face's older name for the same token.
        if "huggingface_api_key" not in values and env.get("HUGGINGFACE_API_KEY"):
            values["huggingface_api_key"] = SecretStr(env["HUGGINGFACE_API_KEY"])
        # Google's SDK reads GOOGLE_API_KEY first, then GEMINI_API_KEY: the same here.
        if env.get("GOOGLE_API_KEY"):
            values["google_api_key"] = SecretStr(env["GOOGLE_API_KEY"])
        if "google_base_url" not in values and env.get("GOOGLE_GEMINI_BASE_URL"):
            values["google_base_url"] = env["GOOGLE_GEMINI_BASE_URL"]
        return cls(**values)

    def require(self, provider: InferenceModelProvider | str) -> str:
        """The key for ``provider``, or a ConfigurationError saying which variable to set."""
        provider = InferenceModelProvider(provider)
        if provider not in _ENV:
            raise ConfigurationError(f"Provider {provider.value!r} takes no API key.")
        key_field, key_var, _, _ = _ENV[provider]
        secret: SecretStr | None = getattr(self, key_field)
        if secret is None or not secret.get_secret_value():
            raise ConfigurationError(
                f"No API key for {provider.value}: set the environment variable {key_var} "
                f"(or pass {key_field}= to KeysModel), or run offline with the simulator "
                "(`--simulate` on the command line, calliope_graph.simulate in Python)."
            )
        return secret.get_secret_value()

    def base_url(self, provider: InferenceModelProvider | str) -> str:
        """The base URL for ``provider`` (override or default), without a trailing slash."""
        provider = InferenceModelProvider(provider)
        if provider not in _ENV:
            raise ConfigurationError(f"Provider {provider.value!r} has no HTTP base URL.")
        _, _, url_field, _ = _ENV[provider]
        url: str | None = getattr(self, url_field)
        return (url or DEFAULT_BASE_URLS[provider]).rstrip("/")

    def model_base_url(self, model: InferenceModel) -> str:
        """Where ``model`` is served: its own ``base_url`` when set, else its provider's."""
        return (model.base_url or self.base_url(model.provider)).rstrip("/")

    def model_key(self, model: InferenceModel) -> str | None:
        """The key to send for ``model``: the variable its ``api_key_env`` names; none for a
        model with its own ``base_url`` and no ``api_key_env`` (Ollama and other local
        servers need none); else its provider's (:meth:`require`)."""
        if model.api_key_env:
            value = os.environ.get(model.api_key_env, "")
            if not value:
                raise ConfigurationError(
                    f"No API key for model {model.slug!r}: set the environment variable "
                    f"{model.api_key_env} (its api_key_env), or remove api_key_env if its "
                    "server needs no key."
                )
            return value
        if model.base_url:
            return None
        return self.require(model.provider)

    def secrets(self) -> list[str]:
        """Every secret value held (for redaction), and the values of the variables models
        name as their ``api_key_env``."""
        out: list[str] = []
        for key_field, _, _, _ in _ENV.values():
            secret: SecretStr | None = getattr(self, key_field)
            if secret is not None and secret.get_secret_value():
                out.append(secret.get_secret_value())
        out += [os.environ[var] for var in sorted(_MODEL_KEY_VARS) if os.environ.get(var)]
        return out

    @staticmethod
    def env_var(provider: InferenceModelProvider | str) -> str:
        """The environment variable holding ``provider``'s key."""
        return _ENV[InferenceModelProvider(provider)][1]


class ModelCatalog:
    """Named model configs: the built-ins, extended from YAML files.

    YAML shape (a mapping from name to a ModelConfig, ``slug`` defaulting to the name)::

        my-story-model:
          description: Llama 3 on a local Ollama
          model_parameters: {temperature: 0.8}
          model: {slug: llama3, provider: openai, provider_model_name: llama3}

    An optional top-level ``limits:`` section (so no config may be named ``limits``) sets
    per-provider rate limits (see :mod:`calliope_graph.limits`), read into :attr:`limits`::

        limits:
          openai: {rpm: 500, tpm: 200000}
          openai/gpt-4o: {tpm: 30000}
          stability: "requests=150/10s,block=60s"
    """

    def __init__(
        self,
        configs: Mapping[str, ModelConfig] | None = None,
        limits: Mapping[str, LimitSpec] | None = None,
    ) -> None:
        self._configs: dict[str, ModelConfig] = dict(configs or {})
        #: Rate limits from ``limits:`` sections, per provider or ``provider/model``; apply
        #: a flow's runs wait on them through its session (``Session.limits_for(catalog)``).
        self.limits: dict[str, LimitSpec] = dict(limits or {})

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._configs))

    def __len__(self) -> int:
        return len(self._configs)

    def get(self, name: str) -> ModelConfig:
        try:
            return self._configs[name]
        except KeyError:
            known = ", ".join(sorted(self._configs))
            raise ConfigurationError(
                f"Unknown model config {name!r}. Known configs: {known}. "
                "Add it to a catalog YAML file (ModelCatalog.load_yaml) or give it inline."
            ) from None

    def add(self, config: ModelConfig, name: str | None = None) -> None:
        self._configs[name or config.slug] = config

    def items(self) -> list[tuple[str, ModelConfig]]:
        return sorted(self._configs.items())

    def copy(self) -> ModelCatalog:
        return ModelCatalog(self._configs, self.limits)

    def load_yaml(self, source: str | Path) -> ModelCatalog:
        """Add every config of a YAML file (or YAML text); returns self for chaining."""
        text = Path(source).read_text() if _looks_like_path(source) else str(source)
        where = str(source) if _looks_like_path(source) else "catalog YAML"
        try:
            check_document(text)
            data = yaml.safe_load(text) or {}
        except DocumentBoundsError as exc:
            at = f", line {exc.line}" if exc.line else ""
            raise ConfigurationError(f"{where}{at}: cannot read the catalog: {exc}.") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{where}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"{where}: a catalog is a mapping from config name to config, "
                f"got {type(data).__name__}."
            )
        for name, body in data.items():
            if name == "limits":
                for key, spec in parse_limit_mapping(body, where=f"{where}: limits").items():
                    old = self.limits.get(key)
                    self.limits[key] = old.merged(spec) if old is not None else spec
                continue
            if not isinstance(body, dict):
                raise ConfigurationError(f"{where}: config {name!r} must be a mapping.")
            body = {"slug": name, **body}
            try:
                self.add(ModelConfig.model_validate(body), str(name))
            except ValidationError as exc:
                raise ConfigurationError(
                    f"{where}: config {name!r} is invalid: {_first_error(exc)}"
                ) from None
        return self


def _looks_like_path(source: str | Path) -> bool:
    return isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml")))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"


def _builtin_catalog() -> ModelCatalog:
    text = resources.files("calliope_graph").joinpath("catalog.yaml").read_text()
    return ModelCatalog().load_yaml(text)


#: The catalog every flow and node resolves config names against by default.
catalog: ModelCatalog = _builtin_catalog()
