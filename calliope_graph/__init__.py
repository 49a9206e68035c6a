"""calliope-graph: multimodal generative story flows as typed LangGraph graphs."""

# First: in a clone, maps the top-level nodes/ and graphs/ folders (calliope_graph/_layout.py).
from calliope_graph import _layout  # noqa: F401
from calliope_graph.config import (
    InferenceModel,
    InferenceModelProvider,
    InferenceModelProviderVariant,
    KeysModel,
    ModelCatalog,
    ModelConfig,
    catalog,
)
from calliope_graph.context import PollSettings, RetrySettings, RunContext
from calliope_graph.errors import (
    AuthenticationError,
    CalliopeError,
    ConfigurationError,
    ContentPolicyError,
    EmptyOutputError,
    FlowRunError,
    FlowSpecError,
    InvalidRequestError,
    MediaError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from calliope_graph.flow import Flow, FlowResult, RunOptions
from calliope_graph.media import Audio, Image, ImageAnalysis, MediaStore, Video

__version__ = "0.1.0"

__all__ = [
    "Audio",
    "AuthenticationError",
    "CalliopeError",
    "ConfigurationError",
    "ContentPolicyError",
    "EmptyOutputError",
    "Flow",
    "FlowResult",
    "FlowRunError",
    "FlowSpecError",
    "Image",
    "ImageAnalysis",
    "InferenceModel",
    "InferenceModelProvider",
    "InferenceModelProviderVariant",
    "InvalidRequestError",
    "KeysModel",
    "MediaError",
    "MediaStore",
    "ModelCatalog",
    "ModelConfig",
    "PollSettings",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RetrySettings",
    "RunContext",
    "RunOptions",
    "TransientProviderError",
    "Video",
    "__version__",
    "catalog",
]
