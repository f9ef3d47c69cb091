"""Whisper base in PyTorch, from the weights its package ships in CTranslate2's format.

The CTranslate2 ``model.bin`` (format 6, fp16) is read directly and mapped onto a
plain PyTorch encoder-decoder: self-attention ``linear_0`` is q, k, v stacked,
cross-attention ``linear_0`` is q and ``linear_1`` k, v stacked, the output
projection is tied to the token embeddings. :class:`GreedyDecoder` decodes a 30 s
window greedily with Whisper's timestamp rules and token suppression, after
detecting the language from the first decoder step. The task around it (VAD, log-mel
features, windows, segments) is :mod:`reelscope.tasks.asr`.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reelscope.errors import ModelError

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
SAMPLE_RATE = 16_000
N_FRAMES = 3000  # 30 s of log-mel frames
TIME_PRECISION = 0.02  # seconds per timestamp token
MAX_INITIAL_TIMESTAMP = 1.0
MAX_NEW_TOKENS = 220


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin (aliases resolved)."""

    def text(f: BinaryIO) -> str:
        (n,) = struct.unpack("<H", f.read(2))
        return f.read(n)[:-1].decode()

    out: dict[str, np.ndarray] = {}
    try:
        with path.open("rb") as f:
            (version,) = struct.unpack("<I", f.read(4))
            if version != 6:
                raise ModelError(f"{path}: CTranslate2 model format {version}, expected 6")
            text(f)
            f.read(4)
            (count,) = struct.unpack("<I", f.read(4))
            for _ in range(count):
                name = text(f)
                (rank,) = struct.unpack("<B", f.read(1))
                shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
                dtype_id, size = struct.unpack("<BI", f.read(5))
                data = np.frombuffer(f.read(size), dtype=_CT2_DTYPES[dtype_id])
                out[name] = data.reshape(shape)
            (aliases,) = struct.unpack("<I", f.read(4))
            for _ in range(aliases):
                alias, target = text(f), text(f)
                out[alias] = out[target]
    except (OSError, struct.error, KeyError, ValueError) as exc:
        raise ModelError(f"cannot read the Whisper weights {path}: {exc}") from exc
    return out


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool) -> None:
        super().__init__()
        self.heads = heads
        self.cross = cross
        self.norm = nn.LayerNorm(dim)
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: dict[str, torch.Tensor] | None = None, causal: bool = False
                ) -> torch.Tensor:
        h = self.norm(x)
        if self.cross:
            if memory is None:
                raise ValueError("cross-attention needs the encoder's memory")
            q = self._split(self.q(h))
            k, v = memory
        else:
            q, k, v = (self._split(t) for t in self.qkv(h).chunk(3, dim=-1))
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[2] > 1)
        b, _, t, _ = y.shape
        return x + self.out(y.transpose(1, 2).reshape(b, t, -1))

    def memory(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(enc).chunk(2, dim=-1)
        return self._split(k), self._split(v)


class _Ffn(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads, False)
        self.ffn = _Ffn(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attn(x))


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads, False)
        self.cross = _Attention(dim, heads, True)
        self.ffn = _Ffn(dim)

    def forward(self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor],
                cache: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.ffn(self.cross(self.attn(x, cache=cache, causal=True), memory=memory))


class WhisperModel(nn.Module):
    """Whisper's encoder and decoder (pre-norm transformers), sizes read from the weights."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        dim = int(w["encoder/conv1/weight"].shape[0])
        mels = int(w["encoder/conv1/weight"].shape[1])
        heads = int(w["encoder/num_heads"]) if "encoder/num_heads" in w else dim // 64
        n_enc, n_dec = (
            len({k.split("/")[1] for k in w
                 if k.startswith(f"{part}/layer_") and k.split("/")[1][6:].isdigit()})
            for part in ("encoder", "decoder"))
        self.conv1 = nn.Conv1d(mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.enc_pos = nn.Parameter(torch.zeros(w["encoder/position_encodings/encodings"].shape))
        self.enc_layers = nn.ModuleList(_EncoderLayer(dim, heads) for _ in range(n_enc))
        self.enc_norm = nn.LayerNorm(dim)
        self.embed = nn.Embedding(*w["decoder/embeddings/weight"].shape)
        self.dec_pos = nn.Parameter(torch.zeros(w["decoder/position_encodings/encodings"].shape))
        self.dec_layers = nn.ModuleList(_DecoderLayer(dim, heads) for _ in range(n_dec))
        self.dec_norm = nn.LayerNorm(dim)
        self._load(w, n_enc, n_dec)

    def _load(self, w: dict[str, np.ndarray], n_enc: int, n_dec: int) -> None:
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(w[name], dtype=np.float32))

        def set_(m: nn.Module, weight: str, bias: str) -> None:
            m.weight.data = t(weight)
            m.bias.data = t(bias)

        def norm(m: nn.LayerNorm, prefix: str) -> None:
            set_(m, f"{prefix}/gamma", f"{prefix}/beta")

        def lin(m: nn.Module, prefix: str) -> None:
            set_(m, f"{prefix}/weight", f"{prefix}/bias")

        def self_attention_and_ffn(attn: _Attention, ffn: _Ffn, p: str) -> None:
            norm(attn.norm, f"{p}/self_attention/layer_norm")
            lin(attn.qkv, f"{p}/self_attention/linear_0")
            lin(attn.out, f"{p}/self_attention/linear_1")
            norm(ffn.norm, f"{p}/ffn/layer_norm")
            lin(ffn.up, f"{p}/ffn/linear_0")
            lin(ffn.down, f"{p}/ffn/linear_1")

        lin(self.conv1, "encoder/conv1")
        lin(self.conv2, "encoder/conv2")
        self.enc_pos.data = t("encoder/position_encodings/encodings")
        for i, enc in enumerate(self._encoder_layers()):
            self_attention_and_ffn(enc.attn, enc.ffn, f"encoder/layer_{i}")
        norm(self.enc_norm, "encoder/layer_norm")
        self.embed.weight.data = t("decoder/embeddings/weight")
        self.dec_pos.data = t("decoder/position_encodings/encodings")
        for i, dec in enumerate(self._decoder_layers()):
            p = f"decoder/layer_{i}"
            self_attention_and_ffn(dec.attn, dec.ffn, p)
            norm(dec.cross.norm, f"{p}/attention/layer_norm")
            lin(dec.cross.q, f"{p}/attention/linear_0")
            lin(dec.cross.kv, f"{p}/attention/linear_1")
            lin(dec.cross.out, f"{p}/attention/linear_2")
        norm(self.dec_norm, "decoder/layer_norm")

    def _encoder_layers(self) -> list[_EncoderLayer]:
        return [cast(_EncoderLayer, m) for m in self.enc_layers]

    def _decoder_layers(self) -> list[_DecoderLayer]:
        return [cast(_DecoderLayer, m) for m in self.dec_layers]

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.enc_pos[: x.shape[1]]
        for layer in self._encoder_layers():
            x = layer(x)
        return self.enc_norm(x)

    def memories(self, enc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross.memory(enc) for layer in self._decoder_layers()]

    def decode(self, tokens: torch.Tensor, memories: list[tuple[torch.Tensor, torch.Tensor]],
               caches: list[dict[str, torch.Tensor]], offset: int) -> torch.Tensor:
        """Logits of the last position, feeding ``tokens`` after ``offset`` cached ones."""
        x = self.embed(tokens) + self.dec_pos[offset : offset + tokens.shape[1]]
        for layer, mem, cache in zip(self._decoder_layers(), memories, caches, strict=True):
            x = layer(x, mem, cache)
        return self.dec_norm(x[:, -1]) @ self.embed.weight.T


@dataclass(frozen=True)
class WhisperTokens:
    """The special token ids decoding needs (from the tokenizer; plain ints, portable)."""

    sot: int
    eot: int
    no_timestamps: int
    timestamp_begin: int
    transcribe: int
    languages: dict[int, str]
    suppress: tuple[int, ...]
    blank: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, hf: Any) -> WhisperTokens:
        from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer

        base = Tokenizer(hf, True, task="transcribe", language="en")
        suppress = {*base.non_speech_tokens, base.transcribe, base.translate, base.sot,
                    base.sot_prev, base.sot_lm, base.no_speech}
        return cls(
            sot=base.sot, eot=base.eot, no_timestamps=base.no_timestamps,
            timestamp_begin=base.timestamp_begin, transcribe=base.transcribe,
            languages={i: c for c in _LANGUAGE_CODES
                       if (i := hf.token_to_id(f"<|{c}|>")) is not None},
            suppress=tuple(sorted(suppress)),
            blank=(*base.encode(" "), base.eot),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["languages"] = {str(k): v for k, v in self.languages.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WhisperTokens:
        return cls(**{**d, "languages": {int(k): v for k, v in d["languages"].items()},
                      "suppress": tuple(d["suppress"]), "blank": tuple(d["blank"])})


Memories = list[tuple[torch.Tensor, torch.Tensor]]


class GreedyDecoder:
    """30 s windows: encode, detect the language, decode greedily with Whisper's
    suppression and timestamp rules. Windows of several videos decode as one batch (each
    row its own language and rules; a row that has ended waits for the others); one
    window is a batch of one. Needs torch only (no tokenizer)."""

    def __init__(self, model: WhisperModel, tokens: WhisperTokens, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.model = model
        self.tok = tokens
        self.device = device
        self.dtype = dtype

    def encode(self, windows: np.ndarray) -> Memories:
        """Cross-attention memories of (n, 80, 3000) log-mel windows."""
        x = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device, self.dtype)
        return self.model.memories(self.model.encode(x))

    def languages(self, memories: Memories) -> list[str]:
        """Each window's language, from the first decoder step."""
        rows = memories[0][0].shape[0]
        caches: list[dict[str, torch.Tensor]] = [{} for _ in memories]
        logits = self.model.decode(self._ids([[self.tok.sot]] * rows), memories, caches, 0)
        ids = list(self.tok.languages)
        best = torch.argmax(logits[:, ids], dim=-1).tolist()
        return [self.tok.languages[ids[i]] for i in best]

    def tokens(self, memories: Memories, languages: list[str]) -> list[list[int]]:
        """Each window's generated tokens (text and timestamps), without the prompt and the
        end, each in its language."""
        tok = self.tok
        ids = {c: i for i, c in tok.languages.items()}
        prompts = [[tok.sot, ids[language], tok.transcribe] for language in languages]
        caches: list[dict[str, torch.Tensor]] = [{} for _ in memories]
        logits = self.model.decode(self._ids(prompts), memories, caches, 0).float()
        outs: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        offset = len(prompts[0])
        while True:
            step = []
            for i, out in enumerate(outs):
                nxt = tok.eot
                if not done[i] and len(out) < MAX_NEW_TOKENS:
                    nxt = int(torch.argmax(self._rules(logits[i], out)))
                if nxt == tok.eot:
                    done[i] = True
                else:
                    out.append(nxt)
                step.append([nxt])
            if all(done):
                return outs
            logits = self.model.decode(self._ids(step), memories, caches, offset).float()
            offset += 1

    def _ids(self, rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, device=self.device)

    def _rules(self, logits: torch.Tensor, out: list[int]) -> torch.Tensor:
        """Whisper's suppression and timestamp rules for the next token."""
        tok = self.tok
        logits = logits.clone()
        logits[list(tok.suppress)] = -np.inf
        logits[tok.no_timestamps] = -np.inf
        if not out:
            logits[list(tok.blank)] = -np.inf
            logits[: tok.timestamp_begin] = -np.inf  # the first token is a timestamp
            last = tok.timestamp_begin + round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION)
            logits[last + 1 :] = -np.inf
            return logits
        last_ts = out[-1] >= tok.timestamp_begin
        prev_ts = len(out) < 2 or out[-2] >= tok.timestamp_begin
        if last_ts:
            if prev_ts:
                logits[tok.timestamp_begin :] = -np.inf  # after a pair: text
            else:
                logits[: tok.eot] = -np.inf  # after text and a timestamp: timestamp or end
        stamps = [t for t in out if t >= tok.timestamp_begin]
        if stamps:  # timestamps never go back
            floor = stamps[-1] if (last_ts and not prev_ts) else stamps[-1] + 1
            logits[tok.timestamp_begin : floor] = -np.inf
        logprobs = F.log_softmax(logits, dim=-1)
        stamp_mass = torch.logsumexp(logprobs[tok.timestamp_begin :], 0)
        if stamp_mass > logprobs[: tok.timestamp_begin].max():  # a timestamp is likelier
            logits[: tok.timestamp_begin] = -np.inf
        return logits


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
