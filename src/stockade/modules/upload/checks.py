"""What an upload may be called and what type it may claim, and how a download is presented.

Pure functions, no I/O: each check returns the cleaned value or raises ValueError with a text a
person can act on.

Why so strict about names and types: the file name comes back in a URL and in a
Content-Disposition header, and the type decides what a browser does with the bytes on the
server's own origin. A name with control or bidirectional-override characters can hide its real
extension ("invoice\u202efdp.exe" shows as "invoiceexe.pdf"); a type like text/html or
image/svg+xml would run the uploader's script in the reader's browser. So only types that cannot
script are shown inline, everything else is a download, and every download also gets
`nosniff` and a sandboxing Content-Security-Policy.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

MAX_FILENAME_BYTES = 255            # what common file systems take for one name
DEFAULT_TYPE = "application/octet-stream"

# RFC 9110 token characters: a media type is token "/" token, parameters token "=" (token or quoted).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})((?:\s*;\s*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*)\s*")
_PATTERN = re.compile(rf"{_TOKEN}/(?:{_TOKEN}|\*)")
MAX_TYPE_LENGTH = 255

# Shown inline: these cannot carry script a browser would run. Not image/svg+xml (an SVG is a
# document with script), not PDF (viewers run script and have had many holes; a strict CSP also
# stops some browsers from showing it), not text/html or anything XML.
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"})
INLINE_KINDS = ("audio/", "video/")
INLINE_EXACT = frozenset({"text/plain"})


def check_filename(name: str) -> str:
    """The name as given, or ValueError saying why it cannot be used."""
    if not name or not name.strip():
        raise ValueError("the file name is empty")
    if name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    if "/" in name or "\\" in name:
        raise ValueError("the file name may not contain / or \\; send the name without a folder")
    for char in name:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise ValueError(f"the file name contains the control or formatting character U+{ord(char):04X}; "
                             "rename the file")
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        raise ValueError(f"the file name is longer than {MAX_FILENAME_BYTES} bytes; shorten it")
    return name


def parse_content_type(value: str | None) -> str:
    """A normalised media type ("type/subtype" in lower case, parameters kept), DEFAULT_TYPE when
    none was given, or ValueError for anything that is not one."""
    if value is None or not value.strip():
        return DEFAULT_TYPE
    if len(value) > MAX_TYPE_LENGTH:
        raise ValueError(f"the content type is longer than {MAX_TYPE_LENGTH} characters")
    match = _MEDIA_TYPE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a media type like image/png")
    params = [p.strip() for p in match.group(3).split(";") if p.strip()]
    return "; ".join([f"{match.group(1).lower()}/{match.group(2).lower()}", *params])


def essence(content_type: str) -> str:
    """The media type without parameters, in lower case: "text/plain; charset=utf-8" -> "text/plain"."""
    return content_type.split(";", 1)[0].strip().lower()


def check_pattern(pattern: str) -> str | None:
    """For the allowed_content_types option: an error text, or None for "image/png" or "image/*"."""
    if pattern.startswith("*"):
        return f"{pattern!r}: to accept any type, leave the list empty"
    return None if _PATTERN.fullmatch(pattern) else f"{pattern!r} is not a media type like image/png or image/*"


def is_allowed(content_type: str, patterns: list[str]) -> bool:
    """Whether the type matches one of the patterns (none: every type is allowed)."""
    if not patterns:
        return True
    kind = essence(content_type)
    main = kind.split("/", 1)[0]
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern == kind or (pattern.endswith("/*") and pattern[:-2] == main):
            return True
    return False


def same_type(sent: str | None, expected: str) -> bool:
    """Whether a PUT's Content-Type is the one the slot was requested for (case and spacing
    aside). A slot requested without a type takes a PUT without one or with the default."""
    try:
        return parse_content_type(sent) == expected
    except ValueError:
        return False


def is_inline(content_type: str) -> bool:
    kind = essence(content_type)
    return kind in INLINE_IMAGES or kind in INLINE_EXACT or kind.startswith(INLINE_KINDS)


def content_disposition(content_type: str, filename: str) -> str:
    """inline for types a browser can show without running anything, attachment otherwise; the
    name both as ASCII (old browsers) and as UTF-8 (RFC 6266, RFC 8187)."""
    kind = "inline" if is_inline(content_type) else "attachment"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
