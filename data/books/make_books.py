#!/usr/bin/env python3
"""Builds data/books/ from two public-domain texts shipped by Debian packages (dictd databases):

  - The Devil's Dictionary, Ambrose Bierce (1881-1906, public domain): `dict-devil` 1.0-13.1
  - The Jargon File 4.4.7 (29 Dec 2003, "in the public domain"): `dict-jargon` 4.4.7-3.1

    apt-get download dict-devil=1.0-13.1 dict-jargon=4.4.7-3.1
    python3 data/books/make_books.py dict-devil_1.0-13.1_all.deb dict-jargon_4.4.7-3.1_all.deb

Each dictionary entry is one document (indentation removed, wrapped lines joined, paragraphs kept as
lines); aliases that point at the same entry are kept once. Written in C4's release format (one JSON
object per line with text, timestamp, url; gzip, mtime 0, level 9), so the output is byte-identical
on every rebuild. Every 25th entry of each dictionary goes to the validation file (held out by
document). The .deb files are checked against the sha256 sums below.
"""
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile

DEBS = {
    "dict-devil_1.0-13.1_all.deb": ("devil", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"),
    "dict-jargon_4.4.7-3.1_all.deb": ("jargon", "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1"),
}
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64num(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def reflow(raw):
    """Strips indentation and joins wrapped lines; blank lines separate paragraphs."""
    paras, cur = [], []
    for line in raw.splitlines():
        line = line.strip()
        if line:
            cur.append(line)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(paras)


def entries(deb, name):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["dpkg-deb", "-x", deb, d], check=True)
        data = gzip.open(f"{d}/usr/share/dictd/{name}.dict.dz").read()
        index = open(f"{d}/usr/share/dictd/{name}.index", encoding="utf-8").read().splitlines()
    seen, out = set(), []
    for line in index:
        head, off, length = line.split("\t")[:3]
        if head.startswith("00-database") or head.startswith("00database"):
            continue
        span = (b64num(off), b64num(length))
        if span in seen:
            continue
        seen.add(span)
        text = reflow(data[span[0]:span[0] + span[1]].decode("utf-8"))
        if text:
            out.append((span[0], head, text))
    out.sort()  # file order: the dictionary's own order, independent of index aliases
    return out


train, valid = [], []
for deb in sys.argv[1:]:
    base = deb.rsplit("/", 1)[-1]
    name, want = DEBS[base]
    got = hashlib.sha256(open(deb, "rb").read()).hexdigest()
    if got != want:
        sys.exit(f"{deb}: sha256 {got}, expected {want}")
    for i, (_, head, text) in enumerate(entries(deb, name)):
        rec = {
            "text": text,
            "timestamp": "2019-04-25T00:00:00Z",  # placeholder: C4's field, not a crawl time
            "url": f"urn:{name}:" + head.replace(" ", "_"),
        }
        (valid if i % 25 == 24 else train).append(rec)

for fname, recs in [("books-train.json.gz", train), ("books-validation.json.gz", valid)]:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")
    with open(fname, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(body)
    text = sum(len(r["text"].encode("utf-8")) for r in recs)
    print(fname, len(recs), "documents", text, "bytes of text", len(body), "bytes of JSON")
