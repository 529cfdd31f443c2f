from __future__ import annotations

import email.utils
import time

import pytest

from neuron_atlas_client.errors import InputError
from services.labelling.cache import ResponseCache, cache_key
from services.labelling.client import parse_retry_after, public_endpoint, strip_fences
from services.labelling.prompt_set import available_versions, load_prompts
from services.labelling.settings import LabelSettings
from shared.storage.stores import LocalStore


def test_retry_after_is_read_in_seconds_milliseconds_and_as_a_date() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 18 <= (parse_retry_after({"retry-after": later}) or 0) <= 20
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_recorded_endpoint_drops_credentials_and_query() -> None:
    assert public_endpoint("https://user:secret@llm.example:8443/v1?key=abc") == "https://llm.example:8443/v1"
    assert public_endpoint(None) == "https://api.openai.com/v1"


def test_fenced_json_is_unwrapped() -> None:
    assert strip_fences('```json\n{"label": "x"}\n```') == '{"label": "x"}'
    assert strip_fences(' {"label": "x"} ') == '{"label": "x"}'


def test_cache_key_changes_with_model_prompt_version_and_input() -> None:
    base = cache_key("m", "v1", "cluster_label", ["a"])
    assert base == cache_key("m", "v1", "cluster_label", ["a"])
    others = {
        cache_key("n", "v1", "cluster_label", ["a"]),
        cache_key("m", "v2", "cluster_label", ["a"]),
        cache_key("m", "v1", "cluster_label", ["b"]),
    }
    assert base not in others and len(others) == 3
    assert base.startswith("m/v1/")


def test_damaged_cache_entry_is_a_miss(tmp_path: object) -> None:
    store = LocalStore(str(tmp_path))
    cache = ResponseCache(store, "llm/")
    cache.put("k.json", {"label": "x"}, {"prompt_tokens": 1, "completion_tokens": 1})
    assert cache.get("k.json") == {"label": "x"}
    store.put_bytes("llm/k.json", b"{not json")
    assert cache.get("k.json") is None


def test_settings_come_from_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not LabelSettings().uses_llm
    monkeypatch.setenv("NEURON_ATLAS_LLM__BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("NEURON_ATLAS_LLM__MODEL", "llama3.2")
    monkeypatch.setenv("NEURON_ATLAS_LLM__TIMEOUT", "12.5")
    settings = LabelSettings()
    assert settings.uses_llm and settings.model == "llama3.2" and settings.timeout == 12.5
    assert settings.source_name == "llm:llama3.2@v1"
    assert not LabelSettings(offline=True).uses_llm


def test_every_prompt_version_loads_with_valid_schemas() -> None:
    import jsonschema

    assert "v1" in available_versions()
    for version in available_versions():
        prompts = load_prompts(version)
        for schema in prompts.schemas.values():
            jsonschema.Draft202012Validator.check_schema(schema)
        assert "{captions}" in prompts.level1 and "{children}" in prompts.parent
    with pytest.raises(InputError, match="Unknown prompt version 'v0'"):
        load_prompts("v0")
