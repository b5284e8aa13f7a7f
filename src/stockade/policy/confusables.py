"""Look-alike names: a confusables skeleton in the spirit of Unicode TR39 section 4.

Two strings are confusable when their skeletons are equal. The skeleton here is TR39's recipe
(NFD, map each character to its prototype, NFD again) with a small table instead of the full
confusables.txt: the characters impostors use against a company address are a short list
(digits that look like letters, Cyrillic and Greek letters that look like Latin ones, "rn" for
"m", "vv" for "w"), and the table is case-folded first so that "CEO" and "ceo" match too.

    skeleton("examp1e.com") == skeleton("example.com")      # True
    skeleton("с3о") == skeleton("ceo")                       # Cyrillic с, о and a digit 3

The skeleton is for comparing only; it is never shown to anyone.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Prototypes: each confusable character maps to the Latin letter it imitates.
_CHARS = {
    # digits and symbols
    "0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
    "|": "l", "!": "l",
    # Latin letters that pass for one another
    "i": "l", "ı": "l", "ɩ": "l", "ℓ": "l",
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "l", "ї": "l", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "һ": "h", "ӏ": "l", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "l", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w", "ϲ": "c",
    # separators that vanish at a glance
    "_": "", "-": "", "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
}
_SEQUENCES = (("rn", "m"), ("vv", "w"), ("cl", "d"))


@lru_cache(maxsize=4096)
def skeleton(text: str) -> str:
    """The comparison form of `text`: equal skeletons mean the strings look alike."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    # Marks are dropped: "é" and "e" look alike at a glance.
    out = "".join(_CHARS.get(ch, ch) for ch in folded if not unicodedata.combining(ch))
    for sequence, prototype in _SEQUENCES:
        out = out.replace(sequence, prototype)
    return out


def looks_alike(a: str, b: str) -> bool:
    """Different strings with the same skeleton."""
    return a != b and skeleton(a) == skeleton(b)
