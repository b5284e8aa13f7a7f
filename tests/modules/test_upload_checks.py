"""XEP-0363 upload checks: file names, media types, and how a download is presented."""

from __future__ import annotations

import pytest

from stockade.modules.upload.checks import (DEFAULT_TYPE, check_filename, check_pattern, content_disposition,
                                            is_allowed, is_inline, parse_content_type, same_type)


@pytest.mark.parametrize("name", ["report.pdf", "holiday photos.tar.gz", "Übersicht (1).xlsx", "写真.jpg",
                                  ".profile", "a" * 255, "ü" * 127])
def test_ordinary_names_are_kept_as_given(name):
    assert check_filename(name) == name


@pytest.mark.parametrize("name, says", [
    ("", "empty"), ("   ", "empty"), (".", "not a file name"), ("..", "not a file name"),
    ("../secret", "may not contain /"), ("C:\\boot.ini", "may not contain /"),
    ("line\nbreak.txt", "U+000A"), ("nul\x00.txt", "U+0000"), ("bell\x07", "U+0007"),
    ("invoice\u202efdp.exe", "U+202E"),          # right-to-left override: shows as "invoiceexe.pdf"
    ("zero\u200bwidth.txt", "U+200B"), ("para\u2029.txt", "U+2029"),
    ("a" * 256, "longer than 255 bytes"), ("ü" * 128, "longer than 255 bytes"),
])
def test_names_that_hide_or_escape_are_refused_with_a_reason(name, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace("+", r"\+")):
        check_filename(name)


@pytest.mark.parametrize("given, normalised", [
    (None, DEFAULT_TYPE), ("", DEFAULT_TYPE), ("image/PNG", "image/png"),
    ("Text/Plain;charset=UTF-8", "text/plain; charset=UTF-8"),
    ('text/plain; charset="utf-8"', 'text/plain; charset="utf-8"'),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
])
def test_media_types_are_normalised(given, normalised):
    assert parse_content_type(given) == normalised


@pytest.mark.parametrize("given", ["text", "text/", "/plain", "text/plain\r\nX-Evil: 1", "text/plain; charset",
                                   "text/html<script>", "a/b; c=\"unterminated", "x/" + "y" * 300])
def test_anything_that_is_not_a_media_type_is_refused(given):
    with pytest.raises(ValueError):
        parse_content_type(given)


def test_allowed_types_match_exactly_or_by_kind():
    assert is_allowed("text/html", [])
    assert is_allowed("image/png", ["image/*"]) and is_allowed("Image/PNG", ["image/*"])
    assert is_allowed("application/pdf; x=y", ["application/pdf"])
    assert not is_allowed("text/html", ["image/*", "application/pdf"])
    assert not is_allowed("imagefake/png", ["image/*"])
    assert check_pattern("image/*") is None and check_pattern("*/*") is not None and check_pattern("image") is not None


def test_a_put_must_send_the_type_of_its_slot():
    assert same_type("text/plain", "text/plain") and same_type("TEXT/plain", "text/plain")
    assert same_type(None, DEFAULT_TYPE) and same_type("application/octet-stream", DEFAULT_TYPE)
    assert not same_type("text/html", "text/plain") and not same_type(None, "text/plain")
    assert not same_type("garbage", DEFAULT_TYPE)


@pytest.mark.parametrize("content_type, inline", [
    ("image/png", True), ("image/jpeg", True), ("video/mp4", True), ("audio/ogg", True),
    ("text/plain; charset=utf-8", True),
    ("image/svg+xml", False), ("text/html", False), ("application/xhtml+xml", False), ("text/xml", False),
    ("application/pdf", False), ("application/javascript", False), ("text/css", False),
    (DEFAULT_TYPE, False), ("multipart/x-mixed-replace", False),
])
def test_only_types_that_cannot_script_are_shown_inline(content_type, inline):
    assert is_inline(content_type) is inline
    assert content_disposition(content_type, "f").startswith("inline" if inline else "attachment")


def test_the_download_name_is_quoted_safely_for_headers():
    value = content_disposition("text/html", 'a "quoted"\\ näme%.html')
    assert value == ("attachment; filename=\"a _quoted__ n_me_.html\"; "
                     "filename*=UTF-8''a%20%22quoted%22%5C%20n%C3%A4me%25.html")
    value.encode("latin-1")                      # fits in an HTTP header


@pytest.mark.parametrize("options, says", [
    ({"allowed_content_types": ["images"]}, "modules.upload.allowed_content_types: 'images' is not a media type"),
    ({"allowed_content_types": ["*/*"]}, "leave the list empty"),
    ({"subdomain": "files.internal"}, "modules.upload.subdomain: give one DNS label"),
    ({"max_file_size": 0}, "modules.upload.max_file_size: 0 is below the minimum 1"),
    ({"slot_lifetime": 1}, "modules.upload.slot_lifetime: 1 is below the minimum 10"),
])
def test_bad_options_stop_startup_naming_the_key(tmp_path, options, says):
    from stockade.app import module_options
    from stockade.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"modules": {"upload": options}}, "stockade.toml", tmp_path, module_options())
    assert says in str(refused.value)
