#!/usr/bin/env python3
"""Question-answer pairs that teach the decoder to read a detail back from exact text.

Recall pages a document's exact segments back beside its memory, and SmolLM2-135M then
still fails to read a stated number from them (docs/RESULTS.md: one chunk in full
attention answers about a third of the fact needles). This writes training material for a
"reader" LoRA on the decoder (`mnemo finetune --qa`): short passages of the training books
(the validation books of data/val are left out, so choices made on them stay fair), each
with one detail in it, and a question about that detail, answered in a few words.

Two kinds of detail:
  * synthetic statements (invented places and names; counts, names, colours, years) from
    phrasings that share no four consecutive words with `mnemo eval`'s needles (checked by
    tests/test_synth.c through `scripts/make_reader_data.py --phrasings`);
  * counts the books state themselves ("there were seven lamps", "three sons"), asked as
    "How many ... ?" where the passage names that noun once.
--list-share P makes a share of the statements list several counts and ask for one (the count
bound to its noun); --inline-share P puts a share of the passages inside the user's message
("inline": true), as `ask --doc` sends a document. The shipped reader (the second) was trained
on --seed 2 --list-share 0.4 --inline-share 0.5; the first on --seed 1 with both at 0 (at 0 they
draw nothing, so that data reproduces as it was).

Output: one JSON object a line, {"context": passage, "question": ..., "answer": ...}, the
passage form of `mnemo finetune --qa` (scripts/train_reader.sh). Deterministic for a seed.
"""
import argparse
import glob
import json
import os
import random
import re
import sys

UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
NUMBER_WORDS = {w: i for i, w in enumerate(UNITS)}
NUMBER_WORDS.update({w: 10 * i for i, w in enumerate(TENS) if w})

# (statement, question, answer kind); {P} a place, {N} a count, {X} a name, {C} a colour, {Y} a year
SYNTH = [
    ("Along the lane to {P} stood {N} old elm trees.", "How many elm trees stood along the lane to {P}?", "n"),
    ("The miller of {P} kept {N} goats behind his house.", "How many goats did the miller of {P} keep?", "n"),
    ("At the fair in {P} there were {N} stalls selling cloth.", "How many stalls sold cloth at the fair in {P}?", "n"),
    ("{X} rode {N} miles from {P} before the sun went down.", "How many miles did {X} ride from {P}?", "n"),
    ("The schooner that left {P} carried a crew of {N} men.", "How many men crewed the schooner that left {P}?", "n"),
    ("By the end of winter, {N} families had settled near {P}.", "How many families had settled near {P}?", "n"),
    ("The chapel at {P} had {N} windows of coloured glass.", "How many coloured glass windows did the chapel at {P} have?", "n"),
    ("{X} counted {N} wagons waiting outside the mill at {P}.", "How many wagons did {X} count outside the mill at {P}?", "n"),
    ("The library of {P} owned {N} volumes of sermons.", "How many volumes of sermons did the library of {P} own?", "n"),
    ("There were {N} guests at the wedding in {P}.", "How many guests were at the wedding in {P}?", "n"),
    ("The innkeeper at {P} was a stout man called {X}.", "What was the innkeeper at {P} called?", "x"),
    ("The letter from {P} was signed by a clerk named {X}.", "Who signed the letter from {P}?", "x"),
    ("The front door of the house at {P} was painted {C}.", "What colour was the front door of the house at {P}?", "c"),
    ("Everyone at {P} remembered that the flag over the tower was {C}.", "What colour was the flag over the tower at {P}?", "c"),
    ("The abbey of {P} was founded in the year {Y}.", "In what year was the abbey of {P} founded?", "y"),
    ("{X} first came to {P} in {Y}, a dry summer.", "In which year did {X} first come to {P}?", "y"),
]
# several counts in one statement, one asked for: the count must be bound to its noun
# (statement with {N0}.. and {A0}.., question about item {I})
LISTS = [
    ("The inventory at {P} listed {N0} barrels, {N1} lanterns and {N2} coils of rope.",
     ["How many barrels did the inventory at {P} list?", "How many lanterns did the inventory at {P} list?",
      "How many coils of rope did the inventory at {P} list?"]),
    ("In the yard at {P} stood {N0} carts and {N1} horses.",
     ["How many carts stood in the yard at {P}?", "How many horses stood in the yard at {P}?"]),
    ("{X} bought {N0} apples and {N1} loaves at the market in {P}.",
     ["How many apples did {X} buy in {P}?", "How many loaves did {X} buy in {P}?"]),
    ("The school at {P} had {N0} pupils, {N1} teachers and {N2} benches.",
     ["How many pupils did the school at {P} have?", "How many teachers did the school at {P} have?",
      "How many benches did the school at {P} have?"]),
    ("On the road from {P} we met {N0} pedlars, {N1} soldiers and {N2} pilgrims.",
     ["How many pedlars did we meet on the road from {P}?", "How many soldiers did we meet on the road from {P}?",
      "How many pilgrims did we meet on the road from {P}?"]),
    # a part of the first count: the total must not be answered with the part, nor the part with the total
    ("{N0} delegates came to the congress at {P}, and {N1} of them voted for the motion.",
     ["How many delegates came to the congress at {P}?", "How many delegates voted for the motion at {P}?"]),
    ("The crew of the ship at {P} numbered {N0} men, {N1} of whom had fallen sick.",
     ["How many men were in the crew of the ship at {P}?", "How many of the crew at {P} had fallen sick?"]),
]
QUESTION_TAILS = ["", "", "", " Answer briefly.", " Reply in a few words.", " Use the passage."]

SYLL_A = ["Ash", "Bel", "Cor", "Dun", "Fen", "Gil", "Hal", "Ken", "Lor", "Mor", "Nor", "Pem", "Ros", "Stan",
          "Tal", "Wes", "Yar", "Cal", "Dar", "Ell"]
SYLL_B = ["bury", "field", "ford", "ham", "ley", "mouth", "stead", "wick", "worth", "by", "combe", "gate",
          "holm", "marsh", "ridge", "ton"]
FIRST = ["Anna", "Bertram", "Clara", "Denis", "Edith", "Felix", "Greta", "Hugo", "Ida", "Jasper", "Kitty",
         "Lionel", "Maud", "Nathan", "Olive", "Percy", "Rosa", "Silas", "Tilda", "Walter"]
LAST = ["Ashdown", "Brook", "Carver", "Dunmore", "Elliot", "Fairley", "Gorse", "Hartley", "Ivers", "Jessop",
        "Kemble", "Lowther", "Marlow", "Norris", "Orme", "Pryce", "Quilter", "Redfern", "Sayle", "Tennant"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "grey", "brown", "purple", "orange"]

# books' own counts: "there were seven lamps", "had three sons", "with four horses"
NUM_RE = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
NATURAL = re.compile(r"\b(?:([Tt]here (?:were|are))\s+)?(" + NUM_RE + r"|\d{1,3})\s+([a-z]{3,}s)\b")


def number_text(n, rng):
    if rng.random() < 0.5:
        return str(n)
    if n < 20:
        return UNITS[n]
    t, u = divmod(n, 10)
    return TENS[t] + ("-" + UNITS[u] if u else "")


def strip_gutenberg(text):
    s = text.find("*** START OF")
    if s < 0:
        s = text.find("***START OF")
    if s >= 0:
        s = text.find("\n", s) + 1
    e = text.find("*** END OF")
    if e < 0:
        e = text.find("***END OF")
    return text[max(s, 0): e if e > 0 else len(text)].replace("\r\n", "\n")


def fill(rng):
    p = rng.choice(SYLL_A) + rng.choice(SYLL_B)
    x = rng.choice(FIRST) + " " + rng.choice(LAST)
    return {"P": p, "X": x, "C": rng.choice(COLOURS), "Y": str(rng.randint(1100, 1899))}


def synthetic(passage, rng, list_share):
    if list_share > 0 and rng.random() < list_share:  # (no draw at 0: the shipped reader's data stays as it was)
        f = fill(rng)
        st, qs = rng.choice(LISTS)
        counts = rng.sample(range(2, 60), len(qs))  # distinct: the answer names one count only
        if " of them" in st or " of whom" in st:  # "N of them": a part, smaller than the whole
            counts.sort(reverse=True)
        for i, c in enumerate(counts):
            f["N%d" % i] = number_text(c, rng)
        i = rng.randrange(len(qs))
        st, q, kind = st, qs[i], "n"
        f["N"] = f["N%d" % i]
    else:
        st, q, kind = rng.choice(SYNTH)
        f = fill(rng)
        f["N"] = number_text(rng.randint(2, 99), rng)
    sent = st.format(**f)
    sent = sent[0].upper() + sent[1:]
    answer = {"n": f["N"], "x": f["X"], "c": f["C"], "y": f["Y"]}[kind]
    # at a sentence boundary, anywhere in the passage
    cuts = [m.end() for m in re.finditer(r"[.!?]\s+", passage)] or [0]
    at = rng.choice(cuts)
    text = passage[:at] + sent + " " + passage[at:]
    return text, q.format(**f) + rng.choice(QUESTION_TAILS), answer


def natural(passage, rng):
    found = list(NATURAL.finditer(passage))
    by_noun = {}
    for m in found:
        by_noun.setdefault(m.group(3), []).append(m)
    ok = [ms[0] for noun, ms in by_noun.items()
          if len(ms) == 1 and len(re.findall(r"\b" + noun + r"\b", passage)) == 1]
    if not ok:
        return None
    m = rng.choice(ok)
    if m.group(2) in ("one", "zero", "0", "1"):
        return None
    if m.group(1):
        q = "How many %s %s there?" % (m.group(3), "were" if "were" in m.group(1) else "are")
    else:
        q = "How many %s does the passage mention?" % m.group(3)
    return passage, q + rng.choice(QUESTION_TAILS), m.group(2)


def phrasings():
    """Every fixed phrase of the generator, its slots written %05d (which tests/test_synth.c skips)."""
    out = []
    for st, q, _ in SYNTH:
        out += [st, q]
    for st, qs in LISTS:
        out += [st] + qs
    out += [t for t in QUESTION_TAILS if t] + ["How many {N} {N} there?", "How many {N} does the passage mention?"]
    return [re.sub(r"\{[A-Z][0-9]?\}", "%05d", t) for t in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output file (JSON lines)")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--natural-share", type=float, default=0.3)
    ap.add_argument("--min-chars", type=int, default=800)
    ap.add_argument("--max-chars", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--list-share", type=float, default=0.0,
                    help="share of synthetic statements with several counts, one asked for")
    ap.add_argument("--inline-share", type=float, default=0.0,
                    help="share of pairs with the passage inside the user's message (as ask --doc sends it)")
    ap.add_argument("--phrasings", action="store_true", help="print the fixed phrasings, one a line, and exit")
    a = ap.parse_args()
    if a.phrasings:
        print("\n".join(phrasings()))
        return 0
    if not a.out:
        ap.error("--out is required")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
    val = {os.path.basename(p) for p in glob.glob(os.path.join(root, "val", "*.txt"))}
    books = []
    for p in sorted(glob.glob(os.path.join(root, "train", "books", "*.txt"))):
        if os.path.basename(p) in val:
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            books.append(strip_gutenberg(f.read()))
    if not books:
        print("make_reader_data: no training books found", file=sys.stderr)
        return 1
    rng = random.Random(a.seed)
    n = 0
    with open(a.out, "w") as qa:
        while n < a.pairs:
            b = rng.choice(books)
            length = rng.randint(a.min_chars, a.max_chars)
            s = rng.randrange(0, max(1, len(b) - length))
            s = b.find("\n\n", s)  # start at a paragraph
            if s < 0:
                continue
            passage = b[s + 2: s + 2 + length]
            got = natural(passage, rng) if rng.random() < a.natural_share else None
            if got is None:
                got = synthetic(passage, rng, a.list_share)
            text, q, ans = got
            pair = {"context": text, "question": q, "answer": ans}
            if a.inline_share > 0 and rng.random() < a.inline_share:
                pair["inline"] = True
            qa.write(json.dumps(pair) + "\n")
            n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
