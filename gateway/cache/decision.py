"""Whether a semantic candidate may be served for a query (pure).

Embeddings rate "can I get a refund" and "can I not get a refund" as near twins, and
the same for prompts that differ only in a number or a name. So a candidate must clear
the similarity threshold *and* every configured lexical guard:

- negation: the same number of negation cues (not, no, never, n't, without, ...);
- numbers:  the same numbers in the same order (digits or number words);
- entities: every name capitalised mid-sentence in either text occurs in both, in the
            same order (so "Paris to London" is not "London to Paris");
- contrast: neither text uses a word whose opposite the other uses (buy/sell, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cache.config import Guard

_WORD = re.compile(r"[A-Za-z][A-Za-z']*|\d[\d,]*(?:\.\d+)?")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")

_NEGATIONS = {
    "not", "no", "never", "without", "cannot", "nobody", "nothing", "none", "neither",
    "nor", "nowhere", "dont", "cant", "wont", "isnt", "arent", "wasnt", "werent", "doesnt",
    "didnt", "shouldnt", "wouldnt", "couldnt", "havent", "hasnt", "hadnt", "mustnt",
    "aint", "unable", "impossible", "fail", "fails", "failed",
}  # fmt: skip

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "half": 0.5, "dozen": 12,
}  # fmt: skip

_OPPOSITES = [
    ("buy", "sell"), ("increase", "decrease"), ("enable", "disable"), ("open", "close"),
    ("start", "stop"), ("before", "after"), ("above", "below"), ("maximum", "minimum"),
    ("max", "min"), ("first", "last"), ("cheapest", "expensive"), ("hot", "cold"),
    ("add", "remove"), ("upload", "download"), ("import", "export"), ("login", "logout"),
    ("encrypt", "decrypt"), ("allow", "deny"), ("accept", "reject"), ("win", "lose"),
    ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
    ("more", "less"), ("most", "least"), ("input", "output"), ("inside", "outside"),
    ("north", "south"), ("east", "west"), ("left", "right"), ("up", "down"),
    ("yesterday", "tomorrow"), ("past", "future"), ("early", "late"), ("true", "false"),
    ("positive", "negative"), ("include", "exclude"), ("lock", "unlock"),
    ("subscribe", "unsubscribe"), ("install", "uninstall"), ("connect", "disconnect"),
    ("push", "pull"), ("send", "receive"), ("lend", "borrow"),
    ("boiling", "freezing"), ("sunrise", "sunset"), ("debit", "credit"),
    ("asc", "desc"), ("ascending", "descending"), ("uppercase", "lowercase"),
]  # fmt: skip
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)

_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay"}


@dataclass(frozen=True)
class Token:
    text: str  # as written
    word: str  # casefolded, apostrophes and possessive 's removed
    sentence_start: bool


def tokens(text: str) -> list[Token]:
    text = text.replace("\u2019", "'")  # typographic apostrophe
    out: list[Token] = []
    start = True
    position = 0
    for match in _WORD.finditer(text):
        if _SENTENCE_END.search(text[position : match.start()]):
            start = True
        raw = match.group()
        word = raw.casefold()
        if word.endswith("'s"):
            word = word[:-2]
        out.append(Token(raw, word.replace("'", ""), start))
        start = False
        position = match.end()
    return out


def negations(toks: Sequence[Token]) -> int:
    return sum(1 for t in toks if t.word in _NEGATIONS or t.text.casefold().endswith("n't"))


def numbers(toks: Sequence[Token]) -> list[float]:
    out: list[float] = []
    for t in toks:
        if t.word[0].isdigit():
            out.append(float(t.word.replace(",", "")))
        elif t.word in _NUMBER_WORDS:
            out.append(float(_NUMBER_WORDS[t.word]))
    return out


def names(toks: Sequence[Token]) -> set[str]:
    """Words capitalised where a sentence does not start: likely names, acronyms."""
    return {
        t.word
        for t in toks
        if t.text[0].isupper() and t.word not in _NOT_NAMES and
        (not t.sentence_start or (t.text.isupper() and len(t.text) > 1))
    }  # fmt: skip


def _ordered(toks: Sequence[Token], wanted: set[str]) -> list[str]:
    seen: list[str] = []
    for t in toks:
        if t.word in wanted and t.word not in seen:
            seen.append(t.word)
    return seen


def failed_guard(query: str, candidate: str, guards: Sequence[Guard]) -> Guard | None:
    """The first guard that tells the two texts apart, or None if all pass."""
    q, c = tokens(query), tokens(candidate)
    for guard in guards:
        if guard == "negation" and negations(q) != negations(c):
            return guard
        if guard == "numbers" and numbers(q) != numbers(c):
            return guard
        if guard == "entities":
            wanted = names(q) | names(c)
            if _ordered(q, wanted) != _ordered(c, wanted):
                return guard
        if guard == "contrast":
            qw, cw = {t.word for t in q}, {t.word for t in c}
            for word in qw ^ cw:
                if _OPPOSITE.get(word, set()) & (cw if word in qw else qw):
                    return guard
    return None


@dataclass(frozen=True)
class Candidate:
    entry_id: int
    similarity: float
    query: str  # the stored entry's query text


@dataclass(frozen=True)
class Decision:
    chosen: Candidate | None
    best_similarity: float | None  # of the nearest candidate, served or not
    rejected_by: list[Guard]  # guards that turned down candidates above the threshold


def decide(
    query: str,
    candidates: Sequence[Candidate],
    threshold: float,
    guards: Sequence[Guard],
) -> Decision:
    """Serve the most similar candidate above the threshold that passes every guard."""
    ranked = sorted(candidates, key=lambda c: c.similarity, reverse=True)
    best = ranked[0].similarity if ranked else None
    rejected: list[Guard] = []
    for candidate in ranked:
        if candidate.similarity < threshold:
            break
        guard = failed_guard(query, candidate.query, guards)
        if guard is None:
            return Decision(candidate, best, rejected)
        rejected.append(guard)
    return Decision(None, best, rejected)
