#!/usr/bin/env python3
"""Builds the bundled downstream tasks from the held-out chapters of the bundled sample
(data/sample/c4-validation.00000-of-00001.json.gz: every 25th KJV chapter, never trained on).

    python3 data/tasks/make_kjv_tasks.py    # from the repository root; rewrites the two files below

- kjv-verse.jsonl (multiple choice): the context is one verse (with the verse before it when there is
  one); the choices are the true next verse and three verses drawn from other held-out chapters, in a
  shuffled order; `label` is the true one's index. Chance is 1/4.
- kjv-word.jsonl (cloze, LAMBADA-style): the context is a verse without its last word; the target is
  that word without trailing punctuation, with its leading space.

Deterministic: a fixed seed, no dependence on anything but the sample file. Standard library only.
"""
import gzip
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "data", "sample", "c4-validation.00000-of-00001.json.gz")
OUT = os.path.join(ROOT, "data", "tasks")
VERSE_ITEMS = 250
WORD_ITEMS = 400

with gzip.open(SRC, "rt", encoding="utf-8") as f:
    chapters = [json.loads(line)["text"].split("\n") for line in f]

rng = random.Random(18)

# Next verse among four.
pairs = [(c, i) for c, vs in enumerate(chapters) for i in range(len(vs) - 1)]
rng.shuffle(pairs)
verse = []
for c, i in pairs[:VERSE_ITEMS]:
    vs = chapters[c]
    context = "\n".join(vs[max(0, i - 1) : i + 1])
    distractors = []
    while len(distractors) < 3:
        oc = rng.randrange(len(chapters))
        if oc == c:
            continue
        v = chapters[oc][rng.randrange(len(chapters[oc]))]
        if v not in distractors:
            distractors.append(v)
    choices = [vs[i + 1]] + distractors
    order = list(range(4))
    rng.shuffle(order)
    verse.append({
        "context": context,
        "choices": [" " + choices[j] for j in order],
        "label": order.index(0),
    })

# Last word of a verse.
verses = [v for vs in chapters for v in vs if len(v.split()) >= 6]
rng.shuffle(verses)
word = []
for v in verses:
    head, last = v.rsplit(" ", 1)
    target = last.rstrip(".,;:!?'\")")
    if not target.isalpha():
        continue
    word.append({"context": head, "target": " " + target})
    if len(word) == WORD_ITEMS:
        break

for name, items in [("kjv-verse.jsonl", verse), ("kjv-word.jsonl", word)]:
    body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items)
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        f.write(body)
    print(name, len(items), "items", len(body.encode("utf-8")), "bytes")
