"""The file control (policy/files.py): what an upload really is, judged by its bytes.

The integration tests (tests/integration/test_upload_scanning.py) PUT real files through a real
server; these drive the same checks directly with UploadReceived events for every rule.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stockade.config import ConfigError, config_from_dict
from stockade.config.schema import FilesPolicySection, PolicySection
from stockade.core.bus import HookBus
from stockade.core.hooks import UploadReceived, VerdictGiven
from stockade.policy.files import FilePolicy, disguised_program, extension, sniff

HOST = "example.com"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64
MZ = b"MZ\x90\x00" + b"\x00" * 64
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def zip_file(entries: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buf.getvalue()


@dataclass
class Group:
    id: str


class Groups:
    def __init__(self, members: dict[str, list[str]]) -> None:
        self.members = members

    def groups_of(self, host: str, username: str) -> list[Group]:
        return [Group(g) for g, users in self.members.items() if username in users]


def event(name: str, data: bytes, content_type: str, *, user: str = "alice", tmp: Path | None = None,
          via_path: bool = False) -> UploadReceived:
    """An upload as the upload module hands it over: `read()` gives the plain bytes in chunks
    (or, with via_path, only the file at `path` exists, as before encryption at rest)."""
    async def read() -> Any:
        for start in range(0, len(data), 1000):
            yield data[start:start + 1000]
    path = None
    if via_path:
        assert tmp is not None
        path = tmp / "upload.bin"
        path.write_bytes(data)
    return UploadReceived(HOST, user, "slot1", name, content_type, len(data), path,
                          read=None if via_path else read)


def control(files: FilesPolicySection | None = None, groups: dict[str, list[str]] | None = None
            ) -> tuple[FilePolicy, list[VerdictGiven]]:
    bus = HookBus()
    seen: list[VerdictGiven] = []
    bus.on(VerdictGiven, seen.append)
    policy = FilePolicy(Groups(groups or {}), bus)
    policy.apply(HOST, PolicySection(files=files) if files is not None else None)
    return policy, seen


async def rule_of(policy: FilePolicy, upload: UploadReceived) -> str | None:
    verdict = await policy.on_upload(upload)
    return None if verdict is None else verdict.rule


# -- the bytes say what a file is -------------------------------------------------------------
def test_programs_are_recognised_by_their_first_bytes():
    for header in (ELF, MZ, b"\xcf\xfa\xed\xfe" + b"\x00" * 16):
        real = sniff(header)
        assert real is not None and real.is_program
    assert sniff(PDF).mime == "application/pdf" and not sniff(PDF).is_program
    assert sniff(PNG).mime == "image/png"
    assert sniff(zip_file({"[Content_Types].xml": "<Types/>", "word/document.xml": "<w/>"})).mime == DOCX
    assert sniff(b"plain words") is None          # text is decided by reading the whole file


@pytest.mark.parametrize("name, claimed, is_disguised", [
    ("invoice.pdf", "application/pdf", True),
    ("invoice.pdf", "application/octet-stream", True),      # the name lies
    ("tool.exe", "application/pdf", True),                  # the type lies
    ("tool.exe", "application/octet-stream", False),        # an honest program
    ("tool.exe", "application/x-msdownload", False),
    ("agent", "application/octet-stream", False),           # Linux programs often have no extension
])
def test_a_program_is_disguised_when_its_name_or_type_says_otherwise(name, claimed, is_disguised):
    assert disguised_program(sniff(MZ), claimed, name) is is_disguised


def test_extensions():
    assert extension("Report.PDF") == "pdf" and extension("a.tar.gz") == "gz"
    assert extension(".bashrc") == "" and extension("README") == ""


# -- every host: programs disguised as documents ------------------------------------------------
async def test_without_a_files_policy_only_disguised_programs_are_refused(tmp_path):
    policy, seen = control(None)
    assert await rule_of(policy, event("invoice.pdf", ELF, "application/pdf")) == "files.disguised_program"
    assert seen[0].detail == {"file": "invoice.pdf", "size": len(ELF), "type": "application/pdf",
                              "slot": "slot1", "real_type": "application/x-executable"}
    assert seen[0].actor == f"alice@{HOST}" and seen[0].stanza is None
    assert await rule_of(policy, event("page.html", b"<script>x</script>", "text/html")) is None
    assert await rule_of(policy, event("tool.exe", MZ, "application/octet-stream")) is None
    # the file at `path` is read when the store gives no read()
    assert await rule_of(policy, event("x.pdf", MZ, "application/pdf", tmp=tmp_path, via_path=True)) \
        == "files.disguised_program"


async def test_the_policy_follows_apply_at_runtime():
    policy, _ = control(None)
    assert await rule_of(policy, event("run.js", b"alert(1)", "text/plain")) is None
    policy.apply(HOST, PolicySection(files=FilesPolicySection()))
    assert await rule_of(policy, event("run.js", b"alert(1)", "text/plain")) == "files.blocked_extensions"
    policy.apply(HOST, None)
    assert await rule_of(policy, event("run.js", b"alert(1)", "text/plain")) is None


# -- [hosts.policy.files] -------------------------------------------------------------------------
async def test_the_default_office_set_accepts_documents():
    policy, seen = control(FilesPolicySection())
    assert await rule_of(policy, event("report.pdf", PDF, "application/pdf")) is None
    assert await rule_of(policy, event("chart.png", PNG, "image/png")) is None
    assert await rule_of(policy, event("notes.txt", "Grüße\n".encode(), "text/plain")) is None
    assert await rule_of(policy, event("notes.txt", "Grüße\n".encode(), "text/plain; charset=utf-8")) is None
    assert await rule_of(policy, event("report.pdf", PDF, "application/octet-stream")) is None
    # a Word file the library only sees as a ZIP is taken as the Word file it claims to be
    assert await rule_of(policy, event("memo.docx", zip_file({"a.xml": "<a/>"}), DOCX)) is None
    assert seen == []


@pytest.mark.parametrize("name, data, claimed, rule, says", [
    ("run.js", b"WScript.Echo(1)", "text/plain", "files.blocked_extensions", "files ending in .js"),
    ("setup.EXE", MZ, "application/octet-stream", "files.blocked_extensions", ".exe"),
    ("data.zip", zip_file({"a.txt": "a"}), "application/zip", "files.allowed_types", "a ZIP archive"),
    ("blob.dat", b"\x00\x01\x02\xff", "application/octet-stream", "files.allowed_types", "binary data"),
    ("page.txt", b"<p>hi</p>", "text/html", "files.allowed_types", "sent as text/html"),
    ("page.html", b"<p>hi</p>", "text/plain", "files.allowed_types", "stands for text/html"),
    ("chart.pdf", PNG, "application/pdf", "files.type_mismatch", "a PNG image (image/png), but it was sent"),
    ("report.png", PDF, "image/png", "files.type_mismatch", "disagrees with its type"),
])
async def test_files_outside_the_policy_are_refused_with_the_reason(name, data, claimed, rule, says):
    policy, seen = control(FilesPolicySection())
    verdict = await policy.on_upload(event(name, data, claimed))
    assert verdict is not None and verdict.rule == rule and says in verdict.text, verdict
    assert seen[0].verdict is verdict


async def test_max_size_caps_files_on_this_host():
    policy, _ = control(FilesPolicySection(max_size=10))
    verdict = await policy.on_upload(event("a.txt", b"x" * 11, "text/plain"))
    assert verdict.rule == "files.max_size" and "11 bytes, more than the 10 bytes" in verdict.text
    assert await rule_of(policy, event("a.txt", b"x" * 10, "text/plain")) is None


async def test_allowed_types_take_patterns():
    policy, _ = control(FilesPolicySection(allowed_types=["image/*"], blocked_extensions=[]))
    assert await rule_of(policy, event("chart.png", PNG, "image/png")) is None
    assert await rule_of(policy, event("report.pdf", PDF, "application/pdf")) == "files.allowed_types"


async def test_exempt_groups_skip_the_allow_list_but_not_the_cap_nor_the_disguise_check():
    policy, _ = control(FilesPolicySection(exempt_groups=["it"], max_size=100), {"it": ["bob"]})
    script = b"#!/bin/sh\necho deploy\n"
    assert await rule_of(policy, event("deploy.sh", script, "text/plain")) == "files.blocked_extensions"
    assert await rule_of(policy, event("deploy.sh", script, "text/plain", user="bob")) is None
    assert await rule_of(policy, event("big.sh", b"x" * 101, "text/plain", user="bob")) == "files.max_size"
    assert await rule_of(policy, event("memo.pdf", MZ, "application/pdf", user="bob")) == "files.disguised_program"


# -- configuration --------------------------------------------------------------------------------
def load(files: dict[str, Any] | None = None, malware: dict[str, Any] | None = None) -> Any:
    doc: dict[str, Any] = {"hosts": [{"domain": HOST, "policy": {"files": files or {}}}]}
    if malware is not None:
        doc["malware"] = malware
    return config_from_dict(doc, "stockade.toml", Path("."))


def test_the_configuration_is_read_and_checked():
    config = load({"allowed_types": ["application/pdf"], "max_size": 5000})
    assert config.hosts[0].policy.files.allowed_types == ["application/pdf"]
    assert config.malware.enabled is False and config.malware.fail_closed is True
    assert load(malware={"clamd": "127.0.0.1:3310"}).malware.clamd == "127.0.0.1:3310"
    with pytest.raises(ConfigError, match="allowed_types.*not a media type"):
        load({"allowed_types": ["pdf"]})
    with pytest.raises(ConfigError, match="blocked_extensions.*without the dot"):
        load({"blocked_extensions": [".exe"]})
    with pytest.raises(ConfigError, match="malware.clamd.*host:port"):
        load(malware={"clamd": "localhost"})
    with pytest.raises(ConfigError, match="malware.timeout"):
        load(malware={"timeout": 0})
