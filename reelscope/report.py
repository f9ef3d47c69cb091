"""The analysis report: typed results that serialize to the JSON other tools read.

The top-level keys (``video``, ``labels``, ``ocr``, ``transcript``, ``sentiment``,
``copyright``, ``similar``, ``timings_s``, ``engines``) are a public contract.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VideoInfo:
    id: str
    sha256: str
    duration_s: float
    width: int  # as displayed (rotation and sample aspect ratio applied)
    height: int
    fps: float
    has_audio: bool
    video_codec: str = ""
    audio_codec: str = ""
    filename: str = ""
    rotation: int = 0  # clockwise degrees the stored picture is turned to be shown
    mirrored: bool = False  # shown mirrored left to right (before the rotation)
    hdr: str = ""  # "pq" or "hlg" when the video is HDR (tone-mapped for the models)
    bit_depth: int = 8
    audio_track: int = -1  # which audio track was used (0-based among them), -1: none
    audio_tracks: int = 0
    audio_language: str = ""


@dataclass(frozen=True)
class Label:
    label: str
    score: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class OcrEntry:
    text: str
    start_s: float
    end_s: float
    score: float
    language: str = ""


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    language: str = ""  # this segment's own (code-switched speech), from its text


@dataclass(frozen=True)
class Transcript:
    language: str = ""
    text: str = ""
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True)
class SentimentSource:
    source: str  # "transcript" or "ocr"
    language: str  # ISO 639-1, or "und"
    label: str  # negative, neutral, positive, or unknown (a language not supported)
    score: float  # P(positive) - P(negative)
    chars: int
    weight: float = 0.0  # its share of the overall sentiment


@dataclass(frozen=True)
class Sentiment:
    label: str = "neutral"
    score: float = 0.0
    sources: tuple[SentimentSource, ...] = ()


@dataclass(frozen=True)
class CopyrightMatch:
    reference_id: int
    title: str
    score: float
    query_start_s: float
    reference_start_s: float
    duration_s: float
    video_score: float = 0.0
    audio_score: float = 0.0
    speed: float = 1.0  # the copy plays this many times as fast as the reference
    kind: str = "video"  # which matched (the score and times are its): "video" or "audio"


@dataclass(frozen=True)
class SimilarVideo:
    video_id: str
    score: float


@dataclass(frozen=True)
class EngineUse:
    backend: str
    precision: str
    model: str = ""
    path: str = "engine"  # what served the task: engine, fallback, or engine+fallback
    fallback_active: bool = False  # the task's engine was bypassed when the report was made
    device: str = ""  # where the model ran: cpu, cuda:0, ...


@dataclass(frozen=True)
class Report:
    video: VideoInfo
    labels: tuple[Label, ...] = ()
    ocr: tuple[OcrEntry, ...] = ()
    transcript: Transcript = field(default_factory=Transcript)
    sentiment: Sentiment = field(default_factory=Sentiment)
    copyright: tuple[CopyrightMatch, ...] = ()
    similar: tuple[SimilarVideo, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)
    engines: dict[str, EngineUse] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            video=VideoInfo(**data["video"]),
            labels=tuple(Label(**x) for x in data.get("labels", ())),
            ocr=tuple(OcrEntry(**x) for x in data.get("ocr", ())),
            transcript=Transcript(
                language=data["transcript"].get("language", ""),
                text=data["transcript"].get("text", ""),
                segments=tuple(Segment(**s) for s in data["transcript"].get("segments", ())),
            ),
            sentiment=Sentiment(
                label=data["sentiment"]["label"],
                score=data["sentiment"]["score"],
                sources=tuple(SentimentSource(**s) for s in data["sentiment"].get("sources", ())),
            ),
            copyright=tuple(CopyrightMatch(**x) for x in data.get("copyright", ())),
            similar=tuple(SimilarVideo(**x) for x in data.get("similar", ())),
            timings_s=dict(data.get("timings_s", {})),
            engines={k: EngineUse(**v) for k, v in data.get("engines", {}).items()},
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value
