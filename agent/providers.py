"""Pick STT, LLM and TTS from the environment.

Cloud providers are used only when their API keys are set; the local piper voice is
the fallback TTS, so an agent with no keys at all still speaks (from chat text).
Cloud plugins are imported lazily because the ``cloud`` extra may not be installed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from livekit.agents import llm, stt, tts

from avatar_runtime.piper_tts import PiperTTS

DEFAULT_LLM_MODEL = "gpt-4o-mini"
CLOUD_EXTRA_HINT = "pip install 'avatar-agents[cloud]'"

# provider name -> the environment key that enables it
_KEYS = {
    "openai": "OPENAI_API_KEY",
    "deepgram": "DEEPGRAM_API_KEY",
    "cartesia": "CARTESIA_API_KEY",
}
TTS_CHOICES = ("cartesia", "openai", "piper")  # in auto-selection priority order
STT_CHOICES = ("deepgram", "openai", "none")


class ProviderError(RuntimeError):
    """A provider was requested (by key or override) but cannot be constructed."""


@dataclass
class Providers:
    stt: stt.STT | None
    llm: llm.LLM | None
    tts: tts.TTS


def select_providers(env: Mapping[str, str] = os.environ) -> Providers:
    return Providers(stt=select_stt(env), llm=select_llm(env), tts=select_tts(env))


def select_tts(env: Mapping[str, str] = os.environ) -> tts.TTS:
    name = _override(env, "AVATAR_TTS", TTS_CHOICES) or _first_with_key(env, TTS_CHOICES)
    if name == "cartesia":
        return _plugin("cartesia").TTS(api_key=_key(env, "cartesia"))
    if name == "openai":
        return _plugin("openai").TTS(api_key=_key(env, "openai"))
    return PiperTTS()


def select_stt(env: Mapping[str, str] = os.environ) -> stt.STT | None:
    name = _override(env, "AVATAR_STT", STT_CHOICES) or _first_with_key(env, STT_CHOICES)
    if name == "deepgram":
        return _plugin("deepgram").STT(api_key=_key(env, "deepgram"))
    if name == "openai":
        return _plugin("openai").STT(api_key=_key(env, "openai"))
    return None  # no STT: the agent works from chat text only


def select_llm(env: Mapping[str, str] = os.environ) -> llm.LLM | None:
    if not _has_key(env, "openai"):
        return None
    model = env.get("AVATAR_LLM_MODEL", "").strip() or DEFAULT_LLM_MODEL
    return _plugin("openai").LLM(model=model, api_key=_key(env, "openai"))


def describe(providers: Providers) -> str:
    """One log line, e.g. ``stt=none llm=none tts=piper(joe, 22050 Hz)``."""
    return (
        f"stt={_describe_one(providers.stt)} "
        f"llm={_describe_one(providers.llm)} "
        f"tts={_describe_one(providers.tts)}"
    )


def _describe_one(component: Any) -> str:
    if component is None:
        return "none"
    if isinstance(component, PiperTTS):
        return f"piper({component.voice_name}, {component.sample_rate} Hz)"
    details = [str(getattr(component, "model", "unknown"))]
    if isinstance(component, tts.TTS):
        details.append(f"{component.sample_rate} Hz")
    return f"{_plugin_name(component)}({', '.join(details)})"


def _plugin_name(component: Any) -> str:
    # livekit.plugins.<name>.<module> -> <name>; anything else by class name
    parts = type(component).__module__.split(".")
    if parts[:2] == ["livekit", "plugins"] and len(parts) > 2:
        return parts[2]
    return type(component).__name__.lower()


def _override(env: Mapping[str, str], var: str, choices: tuple[str, ...]) -> str | None:
    value = env.get(var, "").strip().lower()
    if not value:
        return None
    if value not in choices:
        raise ProviderError(f"{var}={value!r} is not one of {', '.join(choices)}")
    if value in _KEYS and not _has_key(env, value):
        raise ProviderError(f"{var}={value} needs {_KEYS[value]} to be set")
    return value


def _first_with_key(env: Mapping[str, str], choices: tuple[str, ...]) -> str | None:
    return next((name for name in choices if name in _KEYS and _has_key(env, name)), None)


def _has_key(env: Mapping[str, str], provider: str) -> bool:
    return bool(env.get(_KEYS[provider], "").strip())


def _key(env: Mapping[str, str], provider: str) -> str:
    # passed explicitly: the plugins would otherwise read os.environ, not `env`
    return env[_KEYS[provider]].strip()


def _plugin(provider: str) -> ModuleType:
    try:
        return importlib.import_module(f"livekit.plugins.{provider}")
    except ImportError as e:
        raise ProviderError(
            f"{_KEYS[provider]} is set but livekit-plugins-{provider} is not installed; "
            f"install the cloud extra: {CLOUD_EXTRA_HINT}"
        ) from e
