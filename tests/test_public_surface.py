"""The public surface: what ``calliope_graph`` and each of its subpackages export, pinned.

A package's surface is its ``__all__`` (for a package without one: the public names ``dir()``
shows). Every exported name is public (no leading underscore), importable from the package,
and listed by ``dir()`` -- however the package's ``__init__`` loads it (eagerly or on first
use). Nothing private leaks into an export list (a node's default prompt, a helper that
imports a class by dotted path, the README's matrix generator). Adding a name is a decision:
add it here too.

Every public error class lives in :mod:`calliope_graph.errors`, in its ``__all__`` and in the
tree its docstring draws.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import calliope_graph
from calliope_graph import errors
from calliope_graph.errors import CalliopeError

PUBLIC: dict[str, list[str]] = {
    "calliope_graph": [
        "Audio", "AuthenticationError", "CalliopeError", "ConfigurationError",
        "ContentPolicyError", "EmptyOutputError", "Flow", "FlowResult", "FlowRunError",
        "FlowSpecError", "Image", "ImageAnalysis", "InferenceModel", "InferenceModelProvider",
        "InferenceModelProviderVariant", "InvalidRequestError", "KeysModel", "MediaError",
        "MediaStore", "ModelCatalog", "ModelConfig", "PollSettings", "ProviderError",
        "ProviderTimeoutError", "RateLimitError", "RetrySettings", "RunContext", "RunOptions",
        "TransientProviderError", "Video", "WaitingForChoice", "__version__", "catalog",
    ],
    "calliope_graph.batch": [
        "BatchEvent", "BatchInputError", "BatchOptions", "BatchStats", "BatchSummary",
        "FollowOptions", "Item", "MANIFEST_NAME", "Manifest", "REPORT_NAME", "WorkerOptions",
        "estimate_item_cost", "item_id", "iter_items", "run_batch", "thread_id_for", "trace_cost",
    ],
    "calliope_graph.cli": ["EXIT_CODES", "main"],
    "calliope_graph.engines": [
        "AudioToTextEngine", "Conversion", "ImageAnalysisEngine", "ImageAndTextToVideoEngine",
        "MessagesToObjectEngine", "TextToImageEngine", "TextToSpeechEngine", "TextToTextEngine",
        "get_engine", "register", "supported", "supports",
    ],
    "calliope_graph.flow": [
        "CompiledFlowGraph", "Durability", "EventKind", "Flow", "FlowEvent", "FlowResult",
        "FlowRunner", "FlowRuntime", "FlowSpec", "NodeExecution", "NodeHandle", "OnEvent",
        "RunOptions", "RunnerOptions", "Trace", "load_spec", "shipped_flows",
    ],
    "calliope_graph.graphs": [],
    "calliope_graph.media": [
        "MAX_IMAGE_PIXELS", "Audio", "AudioLimits", "Image", "ImageAnalysis", "ImageLimits",
        "MediaStore", "PreparedImage", "Video", "check_audio", "max_image_pixels", "mime_of",
        "prepared", "set_media_root",
    ],
    "calliope_graph.nodes": [
        "AnalyzeImage", "AssembleVideo", "AudioToText", "CensorText", "Choose", "Classify",
        "Constant", "Frame", "ImageAndTextToVideo", "MergeAnalyses", "MessagesToObject",
        "NoParams", "Node", "ParamDoc",
        "Passthrough", "Port", "PortType", "PromptTemplate", "StoryFrame", "Switch",
        "TextToImage", "TextToSpeech", "TextToText", "get_node_kind", "node_kinds",
        "param_docs", "params_schema", "register_node", "shown",
    ],
    "calliope_graph.serve": [
        "AudioOutput", "ImageOutput", "MediaSigner", "ServeContext", "ServeSettings",
        "VideoOutput", "media_input", "media_url", "public", "serve_graph", "stream_event",
    ],
    "calliope_graph.simulate": [
        "FAULT_KINDS", "FAULT_OPTIONS", "Fault", "FaultSpecError", "ProviderFake", "Simulator",
        "parse_faults", "parse_simulate_limits",
    ],
    "calliope_graph.viz": ["FORMATS", "draw", "render_report", "to_networkx"],
}  # fmt: skip

#: Names that must never be exported by any package again (they are implementation details).
PRIVATE = ("CENSOR_PROMPT", "import_model", "markdown_matrix", "FAKE_MODULES")

#: Modules not imported by the walk: run as programs, or need a server's settings.
NOT_IMPORTED = (
    "calliope_graph.engines.__main__",
    "calliope_graph.cli.__main__",
    "calliope_graph.graphs.server",
)


def exported(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        return [
            n
            for n in dir(module)
            if not n.startswith("_")
            and n != "annotations"
            and not isinstance(getattr(module, n), ModuleType)  # a submodule imported since
        ]
    return list(names)


def test_every_subpackage_is_pinned() -> None:
    packages = {"calliope_graph"} | {
        info.name
        for info in pkgutil.walk_packages(calliope_graph.__path__, "calliope_graph.")
        if info.ispkg and not info.name.rsplit(".", 1)[-1].startswith("_")
    }
    assert packages == set(PUBLIC), "pin the new package's surface in PUBLIC"


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_a_package_exports_exactly_its_pinned_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(exported(module)) == sorted(PUBLIC[package])
    listed = set(dir(module))
    for name in exported(module):
        assert not name.startswith("_") or name == "__version__", f"{package}: {name} is private"
        assert name in listed, f"{package}.{name} is exported but dir() does not list it"
        namespace: dict[str, object] = {}
        exec(f"from {package} import {name}", namespace)  # the import a user writes
        assert namespace[name] is getattr(module, name)
    assert not set(PRIVATE) & set(exported(module))


def public_modules() -> list[ModuleType]:
    modules = [calliope_graph]
    for info in pkgutil.walk_packages(calliope_graph.__path__, "calliope_graph."):
        if info.name in NOT_IMPORTED:
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def test_every_module_all_lists_only_public_names_it_has() -> None:
    for module in public_modules():
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name!r}"
            assert not name.startswith("_") or name == "__version__", (
                f"{module.__name__}.__all__ exports the private {name!r}"
            )


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_public_error_class_lives_in_errors_and_its_drawn_tree() -> None:
    public_modules()  # load every module, so every subclass is defined
    drawing = errors.__doc__ or ""
    for cls in _subclasses(CalliopeError) | {CalliopeError}:
        if cls.__name__.startswith("_") or not cls.__module__.startswith("calliope_graph"):
            continue  # a module's own internal signal, or a test's class
        assert cls.__module__ == "calliope_graph.errors", (
            f"{cls.__name__} is defined in {cls.__module__}: move it to calliope_graph.errors"
        )
        assert cls.__name__ in errors.__all__, cls.__name__
        assert f" {cls.__name__} " in drawing, (
            f"{cls.__name__} is missing from the tree drawn in errors.py"
        )


def test_the_drawn_tree_matches_the_classes() -> None:
    drawing = (errors.__doc__ or "").split("::", 1)[1]
    base = drawing.index("CalliopeError") - drawing.rindex("\n", 0, drawing.index("CalliopeError"))
    drawn = 0
    for line in drawing.splitlines():
        words = line.replace("│", " ").replace("├──", " ").replace("└──", " ").split()
        if not words or not words[0].endswith("Error"):
            continue
        drawn += 1
        depth = (line.index(words[0]) + 1 - base) // 4
        cls = getattr(errors, words[0])
        assert issubclass(cls, CalliopeError), words[0]
        ancestors = [c for c in cls.__mro__ if c is not object and issubclass(c, CalliopeError)]
        assert len(ancestors) - 1 == depth, f"{words[0]} is drawn at the wrong depth"
    assert drawn == len([n for n in errors.__all__ if n.endswith("Error")])


def test_old_import_paths_of_moved_error_classes_still_work() -> None:
    from calliope_graph._fetch import FetchError, FetchRefusedError
    from calliope_graph.batch import BatchInputError
    from calliope_graph.limits import DailyCapError
    from calliope_graph.simulate import FaultSpecError

    assert FetchError is errors.FetchError and FetchRefusedError is errors.FetchRefusedError
    assert BatchInputError is errors.BatchInputError and DailyCapError is errors.DailyCapError
    assert FaultSpecError is errors.FaultSpecError
