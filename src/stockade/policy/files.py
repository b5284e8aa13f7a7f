"""What an uploaded file really is: type by content, allow-list, blocked extensions, size cap.

An uploader chooses the file name and the content type it claims; neither says what the bytes
are. This control reads the bytes (magic numbers through the `filetype` library, which knows
PDF, images, Office and OpenDocument files, archives and programs; text is UTF-8 without NUL
bytes) before anyone can download the file (UploadReceived, which may veto) and refuses:

    always, on every host      a program (Windows MZ, Linux ELF, macOS Mach-O) named or sent as
                               something else, e.g. invoice.pdf that is really an .exe
    with [hosts.policy.files]  a file larger than max_size; a name ending in a blocked extension
                               (.exe, .js, .vbs ...); a real type, claimed type or extension type
                               outside allowed_types; a claimed type of another kind than the
                               content (an "image/png" that is a PDF)

Members of the host's `exempt_groups` skip the allow-list and the extensions (an IT team that
ships tools), never the size cap nor the disguised-program check. Every refusal fires
VerdictGiven (the audit log records it) with the file's name, size, type and slot.
"""

from __future__ import annotations

import asyncio
import codecs
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import filetype

from ..core.hooks import POLICY, UploadReceived, VerdictGiven
from ..core.verdict import Deny
from ..modules.upload.checks import DEFAULT_TYPE, essence, is_allowed

if TYPE_CHECKING:
    from ..config.schema import FilesPolicySection, PolicySection
    from ..core.bus import HookBus
    from ..directory.groups import GroupService

CHUNK = 64 * 1024
HEAD = 8192                  # what the magic-number checks look at
PRIORITY = POLICY + 10       # before the malware scan: cheap refusals first
TEXT = "text/plain"

# Programs, by their first bytes; these are refused when named or sent as anything else.
PROGRAMS = (
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"\xfe\xed\xfa\xce", "a macOS program"), (b"\xfe\xed\xfa\xcf", "a macOS program"),
    (b"\xce\xfa\xed\xfe", "a macOS program"), (b"\xcf\xfa\xed\xfe", "a macOS program"),
    (b"\xca\xfe\xba\xbe", "a macOS or Java program"),
)
PROGRAM_TYPE = "application/x-executable"
PROGRAM_TYPES = frozenset({
    PROGRAM_TYPE, "application/x-msdownload", "application/x-dosexec", "application/x-msdos-program",
    "application/vnd.microsoft.portable-executable", "application/x-elf", "application/x-sharedlib",
    "application/x-mach-binary", "application/java-vm", "application/java-archive", DEFAULT_TYPE,
})
PROGRAM_EXTENSIONS = frozenset({"", "exe", "dll", "sys", "scr", "com", "msi", "elf", "bin", "so", "o", "out",
                                "dylib", "app", "class", "jar", "efi"})
# Office and OpenDocument files are ZIP archives: a ZIP claimed as one of these is taken as such.
ZIP = "application/zip"
ZIP_BASED = ("application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.",
             "application/epub+zip", "application/java-archive", "application/vnd.ms-")
EXTENSION_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text", "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation", "webp": "image/webp", "md": "text/markdown",
}
LABELS = {
    "application/pdf": "a PDF document", TEXT: "plain text", "image/png": "a PNG image",
    "image/jpeg": "a JPEG image", "image/gif": "a GIF image", "image/webp": "a WebP image", ZIP: "a ZIP archive",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "a Word document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "an Excel workbook",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "a PowerPoint presentation",
    DEFAULT_TYPE: "binary data of no known type",
}
_MIME = mimetypes.MimeTypes()          # Python's own table only: the same answer on every machine


# -- reading the upload -------------------------------------------------------------------------
async def file_chunks(event: UploadReceived, size: int = CHUNK) -> AsyncIterator[bytes]:
    """The file's plain bytes: through `event.read()` where the store gives one (files encrypted
    at rest are ciphertext at `event.path`), else from `event.path`."""
    read = getattr(event, "read", None)
    if read is not None:
        async for chunk in read():
            yield chunk
        return
    handle = await asyncio.to_thread(open, event.path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, size):
            yield chunk
    finally:
        handle.close()


async def read_head(event: UploadReceived, size: int = HEAD) -> bytes:
    head = b""
    chunks = file_chunks(event)
    try:
        async for chunk in chunks:
            head += chunk
            if len(head) >= size:
                break
    finally:
        await chunks.aclose()
    return head[:size]


async def is_text(event: UploadReceived) -> bool:
    """UTF-8 without NUL bytes, to the end (a binary file usually fails in its first chunk)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    chunks = file_chunks(event)
    try:
        async for chunk in chunks:
            if b"\0" in chunk:
                return False
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    finally:
        await chunks.aclose()
    return True


# -- what the bytes are -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RealType:
    mime: str
    label: str
    is_program: bool = False
    is_by_magic: bool = False      # recognised by its magic bytes (not text or unknown)


def sniff(head: bytes) -> RealType | None:
    """The type the first bytes prove, or None (text or unknown: see `detect`)."""
    for magic, label in PROGRAMS:
        if head.startswith(magic):
            return RealType(PROGRAM_TYPE, label, is_program=True, is_by_magic=True)
    kind = filetype.guess(head) if head else None
    if kind is None:
        return None
    return RealType(kind.mime, LABELS.get(kind.mime, f"a file of type {kind.mime}"), is_by_magic=True)


async def detect(event: UploadReceived) -> RealType:
    real = sniff(await read_head(event))
    if real is not None:
        return real
    if await is_text(event):
        return RealType(TEXT, LABELS[TEXT])
    return RealType(DEFAULT_TYPE, LABELS[DEFAULT_TYPE])


def extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[1].lower() if "." in name.strip(".") else ""


def extension_type(ext: str) -> str | None:
    """The media type a file name's extension stands for, None when unknown or generic."""
    if not ext:
        return None
    kind = EXTENSION_TYPES.get(ext) or _MIME.guess_type(f"x.{ext}", strict=False)[0]
    return None if kind in (None, DEFAULT_TYPE) else kind


def disguised_program(real: RealType, claimed: str, filename: str) -> bool:
    """A program whose name or claimed type says it is something else."""
    return real.is_program and (extension(filename) not in PROGRAM_EXTENSIONS or claimed not in PROGRAM_TYPES)


# -- the control --------------------------------------------------------------------------------
class FilePolicy:
    """The UploadReceived handler of every host; `apply` gives it each host's [hosts.policy.files]."""

    def __init__(self, groups: GroupService, bus: HookBus) -> None:
        self.groups = groups
        self.bus = bus
        self.sections: dict[str, FilesPolicySection] = {}

    def apply(self, host: str, policy: PolicySection | None) -> None:
        """Take the host's current policy (at start, and on every change at runtime)."""
        section = getattr(policy, "files", None) if policy is not None else None
        if section is None:
            self.sections.pop(host, None)
        else:
            self.sections[host] = section

    def subscribe(self, bus: HookBus) -> None:
        bus.on(UploadReceived, self.on_upload, PRIORITY)

    async def on_upload(self, event: UploadReceived) -> Deny | None:
        verdict, real = await self.judge(event)
        if verdict is not None:
            detail: dict[str, Any] = {"file": event.filename, "size": event.size, "type": event.content_type,
                                      "slot": event.slot_id}
            if real is not None:
                detail["real_type"] = real.mime
            self.bus.fire(VerdictGiven(event.host, f"{event.username}@{event.host}", verdict, detail=detail))
        return verdict

    async def judge(self, event: UploadReceived) -> tuple[Deny | None, RealType | None]:
        section = self.sections.get(event.host)
        name = event.filename
        if section is not None and section.max_size and event.size > section.max_size:
            return refuse("files.max_size", f"it is {event.size} bytes, more than the {section.max_size} bytes "
                                            "a file may have here. Send a smaller file, or split it."), None
        claimed = essence(event.content_type)
        real = await detect(event)
        if disguised_program(real, claimed, name):
            return refuse("files.disguised_program",
                          f"its content is {real.label}, but it is named {name!r} and sent as {claimed}. A program "
                          "disguised as another kind of file is refused: do not open the original, and ask the "
                          "person who gave it to you what it is."), real
        if section is None or self._is_exempt(event.host, event.username, section):
            return None, real
        ext = extension(name)
        if ext in section.blocked_extensions:
            return refuse("files.blocked_extensions",
                          f"files ending in .{ext} are not accepted here, because opening one can run a program. "
                          "Send a document instead (for example a PDF), or ask an administrator."), real
        if real.mime == ZIP and claimed.startswith(ZIP_BASED):
            real = RealType(claimed, LABELS.get(claimed, f"a file of type {claimed}"), is_by_magic=True)
        accepted = ", ".join(section.allowed_types) or "none"
        if not is_allowed(real.mime, section.allowed_types):
            return refuse("files.allowed_types",
                          f"its content is {real.label} ({real.mime}), a type not accepted here (accepted: "
                          f"{accepted}). Convert it to an accepted type and send it again."), real
        if claimed != DEFAULT_TYPE and not is_allowed(claimed, section.allowed_types):
            return refuse("files.allowed_types", f"it was sent as {claimed}, a type not accepted here (accepted: "
                                                 f"{accepted}). Send it as the type of its content."), real
        by_name = extension_type(ext)
        if by_name is not None and not is_allowed(by_name, section.allowed_types):
            return refuse("files.allowed_types",
                          f"its name ends in .{ext}, which stands for {by_name}, a type not accepted here "
                          f"(accepted: {accepted}). Rename it to match its content ({real.label})."), real
        if real.is_by_magic and claimed != DEFAULT_TYPE and claimed.split("/")[0] != real.mime.split("/")[0]:
            return refuse("files.type_mismatch",
                          f"its content is {real.label} ({real.mime}), but it was sent as {claimed}. A file whose "
                          "content disagrees with its type is refused: send it with its real type."), real
        return None, real

    def _is_exempt(self, host: str, username: str, section: FilesPolicySection) -> bool:
        if not section.exempt_groups:
            return False
        exempt = set(section.exempt_groups)
        return any(group.id in exempt for group in self.groups.groups_of(host, username))


def refuse(rule: str, text: str) -> Deny:
    return Deny("not-acceptable", text, rule=rule)
