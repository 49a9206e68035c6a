"""calliope-graph: multimodal generative story flows as typed LangGraph graphs."""

from typing import TYPE_CHECKING

# First _layout: in a clone, it maps the top-level nodes/ and graphs/ folders. Then _wiring:
# Flow.batch/abatch/draw's implementations (batch/, viz/), wired into flow/ from above.
from calliope_graph import _layout, _wiring  # noqa: F401
from calliope_graph._lazy import exports

__version__ = "0.1.0"

# The exports load on first use (calliope_graph/_lazy.py): `import calliope_graph` loads
# neither LangGraph nor a provider engine nor Pillow until a name that needs them is used.
if TYPE_CHECKING:
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
        WaitingForChoice,
    )
    from calliope_graph.flow import Flow, FlowResult, RunOptions
    from calliope_graph.media import Audio, Image, ImageAnalysis, MediaStore, Video
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.config": [
                "InferenceModel",
                "InferenceModelProvider",
                "InferenceModelProviderVariant",
                "KeysModel",
                "ModelCatalog",
                "ModelConfig",
                "catalog",
            ],
            "calliope_graph.context": ["PollSettings", "RetrySettings", "RunContext"],
            "calliope_graph.errors": [
                "AuthenticationError",
                "CalliopeError",
                "ConfigurationError",
                "ContentPolicyError",
                "EmptyOutputError",
                "FlowRunError",
                "FlowSpecError",
                "InvalidRequestError",
                "MediaError",
                "ProviderError",
                "ProviderTimeoutError",
                "RateLimitError",
                "TransientProviderError",
                "WaitingForChoice",
            ],
            "calliope_graph.flow": ["Flow", "FlowResult", "RunOptions"],
            "calliope_graph.media": ["Audio", "Image", "ImageAnalysis", "MediaStore", "Video"],
        },
    )

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
    "WaitingForChoice",
    "__version__",
    "catalog",
]
