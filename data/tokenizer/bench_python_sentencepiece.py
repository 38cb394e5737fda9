#!/usr/bin/env python3
"""Reference speed of pip's sentencepiece on the same text as `cargo bench --bench data` (the bundled
sample's train file): MB/s of text on one thread, best of 3.

    pip install sentencepiece && python3 data/tokenizer/bench_python_sentencepiece.py
"""
import gzip
import json
import time

import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file="data/tokenizer/c4_en_sentencepiece_32101.model")
with gzip.open("data/sample/c4-train.00000-of-00001.json.gz", "rt", encoding="utf-8") as f:
    docs = [json.loads(line)["text"] for line in f]
mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    for d in docs:
        sp.encode(d)
    best = min(best, time.perf_counter() - t)
print(f"python sentencepiece {spm.__version__}: {mb:.2f} MB in {best:.3f} s = {mb / best:.1f} MB/s (1 thread)")
