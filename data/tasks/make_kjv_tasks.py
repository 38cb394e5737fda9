#!/usr/bin/env python3
"""Builds the bundled downstream tasks from the held-out chapters of the bundled sample
(data/sample/c4-validation.00000-of-00001.json.gz: every 25th KJV chapter, never trained on).

    python3 data/tasks/make_kjv_tasks.py    # from the repository root; rewrites the two files below

- kjv-verse.jsonl (multiple choice): the context is one verse; the choices are the true next verse and
  three verses of about its length (within 20% in characters, so that summed log-likelihood cannot win
  on length) drawn from other held-out chapters, in a shuffled order; `label` is the true one's index.
  Chance is 1/4.
- kjv-choice.jsonl (multiple choice): a verse cut before one of its words (not the first three); the
  choices are that word and three other words drawn uniformly from the held-out text's distinct words.
  Chance is 1/4.
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
    context = vs[i]
    true = vs[i + 1]
    distractors = []
    while len(distractors) < 3:
        oc = rng.randrange(len(chapters))
        if oc == c:
            continue
        v = chapters[oc][rng.randrange(len(chapters[oc]))]
        if v not in distractors and abs(len(v) - len(true)) <= 0.2 * len(true):
            distractors.append(v)
    choices = [vs[i + 1]] + distractors
    order = list(range(4))
    rng.shuffle(order)
    verse.append({
        "context": context,
        "choices": [" " + choices[j] for j in order],
        "label": order.index(0),
    })

# Next word among four.
def bare(w):
    return w.strip(".,;:!?'\"()")

types = sorted({bare(w) for vs in chapters for v in vs for w in v.split() if bare(w).isalpha()})
flat = [v for vs in chapters for v in vs if len(v.split()) >= 6]
rng.shuffle(flat)
choice = []
for v in flat[:250]:
    ws = v.split()
    k = rng.randrange(3, len(ws))
    target = bare(ws[k])
    if not target.isalpha():
        continue
    distractors = []
    while len(distractors) < 3:
        w = types[rng.randrange(len(types))]
        if w != target and w not in distractors:
            distractors.append(w)
    opts = [target] + distractors
    order = list(range(4))
    rng.shuffle(order)
    choice.append({
        "context": " ".join(ws[:k]),
        "choices": [" " + opts[j] for j in order],
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

for name, items in [("kjv-verse.jsonl", verse), ("kjv-choice.jsonl", choice), ("kjv-word.jsonl", word)]:
    body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items)
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        f.write(body)
    print(name, len(items), "items", len(body.encode("utf-8")), "bytes")
