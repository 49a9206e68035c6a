"""Configuration: model configs from the catalog, their parameters, and keys from the
environment (never shown, and a missing one named by its variable)."""

from __future__ import annotations

import pytest

from calliope_graph import KeysModel, ModelConfig
from calliope_graph.config import InferenceModelProvider, catalog
from calliope_graph.errors import ConfigurationError


def test_model_config_merges_parameters_model_then_config() -> None:
    config = catalog.get("openai-gpt-4o").with_parameters(temperature=0.1)
    assert isinstance(config, ModelConfig)
    assert config.provider is InferenceModelProvider.OPENAI
    assert config.parameters["temperature"] == 0.1


def test_unknown_catalog_name_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="openai-gpt-4o"):
        catalog.get("openai-gpt-40")


def test_keys_from_env_and_missing_key_names_the_variable() -> None:
    keys = KeysModel.from_env(
        {"OPENAI_API_KEY": "sk-test-123456", "OPENAI_BASE_URL": "http://x/v1"}
    )
    assert keys.base_url("openai") == "http://x/v1"
    assert "sk-test" not in repr(keys)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        keys.require("anthropic")
