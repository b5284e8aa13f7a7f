"""The built-in DLP detectors: payment cards, US SSNs, IBANs and credentials.

Each detector takes a text and returns the spans (start, end) of what it found. The patterns
are Stockade's own and written so that they cannot backtrack badly (every repetition consumes a
fixed kind of character and is bounded); a candidate is then checked the way the number itself
is checked (a card network's prefix and length, then Luhn for cards, mod 97 for IBANs, the unassigned ranges of SSNs), so that ordinary
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

# Cheap first looks, so that ordinary chat costs well under a microsecond per detector (every
# message body passes here): a card needs 13 digits in a row (single separators allowed), the
# first of them 2 to 6 (every network's prefix, _NETWORKS), and
# every credential shape contains one of these fragments (looked for in the lowercased text).
_THIRTEEN_DIGITS = re.compile(r"(?<![\d-])[2-6]\d(?:[ -]?\d){11}")     # card numbers start with 2-6
_CREDENTIAL_FRAGMENTS = ("-----begin", "akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa",
                         "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "_live_", "aiza",
                         "key", "token", "secret")


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


# Issuer identification: (first digits, lengths) of the card networks (ISO/IEC 7812 IIN ranges
# as the networks publish them). A 13-19 digit number outside them is an order number, a
# timestamp or an account id: one in ten such numbers passes Luhn by chance, so Luhn alone would
# block ordinary text.
_NETWORKS: tuple[tuple[tuple[int, int], frozenset[int]], ...] = (
    ((4, 4), frozenset({13, 16, 19})),                     # Visa
    ((51, 55), frozenset({16})), ((2221, 2720), frozenset({16})),      # Mastercard
    ((34, 34), frozenset({15})), ((37, 37), frozenset({15})),          # American Express
    ((6011, 6011), frozenset({16, 17, 18, 19})), ((644, 649), frozenset({16, 17, 18, 19})),
    ((65, 65), frozenset({16, 17, 18, 19})),                           # Discover
    ((300, 305), frozenset({14, 16, 17, 18, 19})), ((36, 36), frozenset({14, 16, 17, 18, 19})),
    ((38, 39), frozenset({16, 17, 18, 19})),                           # Diners Club
    ((3528, 3589), frozenset({16, 17, 18, 19})),                       # JCB
    ((62, 62), frozenset({16, 17, 18, 19})),                           # UnionPay
    ((50, 50), frozenset(range(12, 20))), ((56, 69), frozenset(range(12, 20))),   # Maestro
)


# (prefix length, lowest, highest, lengths), the prefix lengths worked out once
_ISSUERS = tuple((len(str(low)), low, high, lengths) for (low, high), lengths in _NETWORKS)


def issuer_ok(digits: str) -> bool:
    """Does the number start like a card of a known network, with a length that network uses?"""
    length = len(digits)
    for size, low, high, lengths in _ISSUERS:
        if length in lengths and low <= int(digits[:size]) <= high:
            return True
    return False


def find_cards(text: str) -> list[Span]:
    if _THIRTEEN_DIGITS.search(text) is None:
        return []
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        if " " in raw and "-" in raw:    # "1234-5678 9012": not one number
            continue
        digits = raw.replace(" ", "").replace("-", "") if not raw.isdigit() else raw
        if issuer_ok(digits) and len(set(digits)) > 1 and luhn_ok(digits):
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
    lowered = text.lower()
    if not any(fragment in lowered for fragment in _CREDENTIAL_FRAGMENTS):
        return []
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
