"""XEP-0045 section 10.2: room configuration (the muc#roomconfig form) and what it shows in disco.

A room's configuration is a `RoomConfig`. The owner reads it as a data form (`config_form`) and
changes it by submitting one (`apply_form`), which validates every field before anything
changes: a bad value refuses the whole form with <not-acceptable/> and a text naming the field.
Fields this service does not offer are ignored (clients send back whole forms from other
servers). `privacy_codes` gives the status codes occupants get when the change matters to
their privacy (10.2.1: 170/171 logging, 172/173 anonymity, 104 anything else).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...protocol.errors import StanzaError
from ...protocol.xml import Element
from .forms import Submission, add_field, boolean_text, new_form

NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
F = "muc#roomconfig_"
MAX_TEXT = 1024          # room name, description, password
ALLOW_PM = ("anyone", "participants", "moderators", "none")
WHOIS = ("moderators", "anyone")


@dataclass(frozen=True)
class RoomConfig:
    name: str = ""
    description: str = ""
    is_persistent: bool = False
    is_public: bool = True
    is_members_only: bool = False
    is_moderated: bool = False
    password: str = ""                   # empty: not password-protected
    whois: str = "moderators"            # "moderators": semi-anonymous; "anyone": non-anonymous
    max_users: int = 0                   # 0: the service limit
    allow_subject_change: bool = False   # participants may change the subject
    allow_invites: bool = False          # non-admins may invite in members-only rooms
    allow_private: str = "anyone"        # who may send private messages
    is_logged: bool = False              # messages go to the room archive (XEP-0313)

    @property
    def is_password_protected(self) -> bool:
        return bool(self.password)

    @property
    def is_non_anonymous(self) -> bool:
        return self.whois == "anyone"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def config_form(room_name: str, config: RoomConfig, max_users_limit: int) -> Element:
    """The muc#roomconfig form with the current values (10.1.3, 10.2)."""
    x = new_form(NS_ROOMCONFIG, title=f"Configuration of the room {room_name}",
                 instructions="Complete this form to change the configuration of the room.")
    add_field(x, F + "roomname", "text-single", [config.name], "Natural-language room name")
    add_field(x, F + "roomdesc", "text-single", [config.description], "Short description of the room")
    add_field(x, F + "persistentroom", "boolean", [boolean_text(config.is_persistent)],
              "Keep the room when the last occupant leaves")
    add_field(x, F + "publicroom", "boolean", [boolean_text(config.is_public)],
              "List the room in the service's room directory")
    add_field(x, F + "membersonly", "boolean", [boolean_text(config.is_members_only)],
              "Only members may enter")
    add_field(x, F + "moderatedroom", "boolean", [boolean_text(config.is_moderated)],
              "Only participants with voice may speak")
    add_field(x, F + "passwordprotectedroom", "boolean", [boolean_text(config.is_password_protected)],
              "A password is required to enter")
    add_field(x, F + "roomsecret", "text-private", [config.password], "Password")
    add_field(x, F + "whois", "list-single", [config.whois], "Who may discover real JIDs",
              [("Moderators only", "moderators"), ("Anyone", "anyone")])
    limit = max_users_limit
    choices = sorted({n for n in (10, 20, 30, 50, 100, 200, 500, 1000) if n < limit} | {limit})
    add_field(x, F + "maxusers", "list-single", [str(config.max_users or limit)], "Maximum number of occupants",
              [(str(n), str(n)) for n in choices])
    add_field(x, F + "changesubject", "boolean", [boolean_text(config.allow_subject_change)],
              "Participants may change the subject")
    add_field(x, F + "allowinvites", "boolean", [boolean_text(config.allow_invites)],
              "Occupants may invite others (members-only rooms: the invitee becomes a member)")
    add_field(x, F + "allowpm", "list-single", [config.allow_private], "Who may send private messages",
              [("Anyone", "anyone"), ("Participants", "participants"), ("Moderators", "moderators"),
               ("Nobody", "none")])
    add_field(x, F + "enablelogging", "boolean", [boolean_text(config.is_logged)],
              "Keep an archive of the discussion (XEP-0313)")
    return x


def _text(form: Submission, var: str, current: str) -> str:
    value = form.single(F + var)
    if value is None:
        return current
    if len(value) > MAX_TEXT:
        raise StanzaError("not-acceptable", f"the field {F + var} is longer than {MAX_TEXT} characters")
    return value


def _bool(form: Submission, var: str, current: bool) -> bool:
    value = form.boolean(F + var)
    return current if value is None else value


def _choice(form: Submission, var: str, current: str, choices: tuple[str, ...]) -> str:
    value = form.single(F + var)
    if value is None or value == "":
        return current
    if value not in choices:
        raise StanzaError("not-acceptable", f"the field {F + var} takes one of {', '.join(choices)}, not {value!r}")
    return value


def apply_form(config: RoomConfig, form: Submission, max_users_limit: int) -> RoomConfig:
    """The configuration after a submitted form; refuses the whole form if any field is bad."""
    if form.form_type is not None and form.form_type != NS_ROOMCONFIG:
        raise StanzaError("bad-request", f"expected a form of type {NS_ROOMCONFIG}, got {form.form_type}")
    max_users = config.max_users
    raw = form.single(F + "maxusers")
    if raw not in (None, ""):
        if raw == "none":
            max_users = 0
        else:
            try:
                max_users = int(raw)
            except ValueError:
                raise StanzaError("not-acceptable", f"{F}maxusers must be a number, not {raw!r}") from None
            if not 1 <= max_users <= max_users_limit:
                raise StanzaError("not-acceptable", f"{F}maxusers must be between 1 and {max_users_limit}")
            if max_users == max_users_limit:
                max_users = 0
    password = _text(form, "roomsecret", config.password)
    is_protected = _bool(form, "passwordprotectedroom", config.is_password_protected)
    if is_protected and not password:
        raise StanzaError("not-acceptable", "a password-protected room needs a password (muc#roomconfig_roomsecret)")
    if not is_protected:
        password = ""
    return RoomConfig(
        name=_text(form, "roomname", config.name),
        description=_text(form, "roomdesc", config.description),
        is_persistent=_bool(form, "persistentroom", config.is_persistent),
        is_public=_bool(form, "publicroom", config.is_public),
        is_members_only=_bool(form, "membersonly", config.is_members_only),
        is_moderated=_bool(form, "moderatedroom", config.is_moderated),
        password=password,
        whois=_choice(form, "whois", config.whois, WHOIS),
        max_users=max_users,
        allow_subject_change=_bool(form, "changesubject", config.allow_subject_change),
        allow_invites=_bool(form, "allowinvites", config.allow_invites),
        allow_private=_choice(form, "allowpm", config.allow_private, ALLOW_PM),
        is_logged=_bool(form, "enablelogging", config.is_logged),
    )


def privacy_codes(old: RoomConfig, new: RoomConfig) -> list[str]:
    """Status codes that tell occupants how a configuration change affects them (10.2.1)."""
    codes = []
    if new.is_logged != old.is_logged:
        codes.append("170" if new.is_logged else "171")
    if new.whois != old.whois:
        codes.append("172" if new.is_non_anonymous else "173")
    if new != old:
        codes.append("104")
    return codes


def room_features(config: RoomConfig) -> list[str]:
    """The muc_* disco features that describe a room (XEP-0045 section 6.4, 16.2)."""
    return [
        "muc_public" if config.is_public else "muc_hidden",
        "muc_persistent" if config.is_persistent else "muc_temporary",
        "muc_membersonly" if config.is_members_only else "muc_open",
        "muc_moderated" if config.is_moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.is_non_anonymous else "muc_semianonymous",
        "muc_passwordprotected" if config.is_password_protected else "muc_unsecured",
    ]


def room_info_form(config: RoomConfig, subject: str, occupants: int, owners: list[str]) -> Element:
    """XEP-0128 extended information about the room (the muc#roominfo form, 6.4)."""
    x = new_form(NS_ROOMINFO, type_="result")
    add_field(x, "muc#roominfo_description", None, [config.description], "Description")
    add_field(x, "muc#roominfo_subject", None, [subject], "Subject")
    add_field(x, "muc#roominfo_occupants", None, [str(occupants)], "Number of occupants")
    add_field(x, "muc#roominfo_changesubject", None, [boolean_text(config.allow_subject_change)],
              "Occupants may change the subject")
    if config.is_non_anonymous:
        add_field(x, "muc#roominfo_contactjid", None, owners, "Contact addresses")
    return x
