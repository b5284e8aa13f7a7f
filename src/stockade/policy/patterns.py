"""The built-in DLP detectors: payment cards, US SSNs, IBANs and credentials.

Each detector takes a text and returns the spans (start, end) of what it found. The patterns
are Stockade's own and written so that they cannot backtrack badly (every repetition consumes a
fixed kind of character and is bounded); a candidate is then checked the way the number itself
is checked (Luhn for cards, mod 97 for IBANs, the unassigned ranges of SSNs), so that ordinary
numbers in a chat (order numbers, phone numbers, dates) do not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Span = tuple[int, int]

# 13 to 19 digits, optionally grouped by single spaces or dashes ("4111 1111 1111 1111").
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
# AAA-GG-SSSS, with dashes or spaces (nine bare digits are too often something else).
_SSN = re.compile(r"(?<!\d)(\d{3})([- ])(\d{2})\2(\d{4})(?!\d)")
# Two letters, two check digits, then 11 to 30 letters or digits, optionally in groups of four.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CREDENTIALS = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"
    r"|(?<![A-Za-z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])"
    r"|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}"
    r"|(?<![A-Za-z0-9-])xox[abposr]-[A-Za-z0-9-]{10,200}"
    r"|(?<![A-Za-z0-9_])(?:sk|rk)_live_[A-Za-z0-9]{16,128}"
    r"|(?<![A-Za-z0-9_])AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"
    r"|(?i:(?<![A-Za-z0-9_])(?:api[_-]?key|api[_-]?token|access[_-]?token|auth[_-]?token|secret[_-]?key|client[_-]?secret)"
    r"[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?[A-Za-z0-9_\-/+.=]{16,256})")


MAX_PEM = 20000        # characters searched for the END line of a private key block


def luhn_ok(digits: str) -> bool:
    """The Luhn check of payment card numbers (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """The ISO 13616 check: move the first four characters to the end, letters become 10..35,
    and the number modulo 97 is 1."""
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def find_cards(text: str) -> list[Span]:
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        separators = {c for c in raw if not c.isdigit()}
        if len(separators) > 1:          # "1234-5678 9012": not one number
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
            out.append(m.span())
    return out


def find_ssns(text: str) -> list[Span]:
    out = []
    for m in _SSN.finditer(text):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        if area == "000" or area == "666" or area[0] == "9" or group == "00" or serial == "0000":
            continue
        out.append(m.span())
    return out


def find_ibans(text: str) -> list[Span]:
    return [m.span() for m in _IBAN.finditer(text) if iban_ok(m.group().replace(" ", ""))]


def find_credentials(text: str) -> list[Span]:
    out = []
    for m in _CREDENTIALS.finditer(text):
        start, end = m.span()
        if m.group().startswith("-----BEGIN"):
            # The whole key block, up to its END line (found by a plain search: linear).
            close = text.find("-----END ", end, end + MAX_PEM)
            if close >= 0:
                tail = text.find("-----", close + 9, close + 80)
                end = tail + 5 if tail >= 0 else close
        out.append((start, end))
    return out


DETECTORS: dict[str, tuple[Callable[[str], list[Span]], str]] = {
    # kind: (finder, how a person calls what it finds)
    "card": (find_cards, "a payment card number"),
    "ssn": (find_ssns, "a US social security number"),
    "iban": (find_ibans, "a bank account number (IBAN)"),
    "credentials": (find_credentials, "a password, key or access token"),
}
