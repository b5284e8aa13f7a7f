"""Restricted XML for XMPP streams (RFC 6120 section 11): elements, serialisation, a stream reader.

Theory of operation
-------------------
An XMPP stream is one long XML document: a `<stream:stream>` root whose children (depth 2) are
stanzas and stream-level elements. `StreamReader` feeds the bytes of one connection to one expat
parser (C, namespace-aware) and turns depth-2 elements into `Element` trees. It does no I/O.

RFC 6120 section 11 restricts the XML a peer may send: no DTD, no entity declarations and no entity
references other than the five predefined ones, no processing instructions, no comments. expat
reports each of those through a handler; ours raise `XmlError("restricted-xml")`. Hostile sizes are
bounded: bytes per top-level element (the stanza size limit, also counting bytes expat is still
buffering inside an unfinished tag), element depth, and attributes per element.

Forwarding without re-serialising: when a stanza is only routed, rebuilding its bytes from the tree
costs more than parsing it. The reader therefore keeps the raw bytes of each depth-2 element's
content (everything between its start and end tags) in `Element._inner`. Serialising such an
element writes a fresh start tag (so a stamped `from` is honoured) followed by the raw content.
Any change made through the mutating methods drops the cached bytes. Raw content is kept only when
it is self-contained: if it uses a namespace prefix bound on the stream root, it is not kept.
"""

from __future__ import annotations

import re
import xml.parsers.expat as expat
from typing import Iterator, Union
from weakref import ref as _ref

from . import ns

Node = Union["Element", str]

_NAME_CACHE: dict[str, tuple[str, str]] = {}
_NAME_CACHE_MAX = 4096


def _split_name(qname: str) -> tuple[str, str]:
    """Split expat's "uri local [prefix]" into (uri, local); unqualified names have uri ""."""
    hit = _NAME_CACHE.get(qname)
    if hit is not None:
        return hit
    parts = qname.split(" ")
    result = (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0])
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[qname] = result
    return result


# Whether a string holds anything escape_text or escape_attr would change: one regex search for
# the common case (nothing to escape) instead of a test per character.
_TEXT_SPECIAL = re.compile("[&<>\r]").search
_ATTR_SPECIAL = re.compile("[&<>\r\"\n\t]").search


def escape_text(s: str) -> str:
    if _TEXT_SPECIAL(s) is None:
        return s
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:          # a literal CR would come back as LF (XML end-of-line handling)
        s = s.replace("\r", "&#13;")
    return s


def escape_attr(s: str) -> str:
    if _ATTR_SPECIAL(s) is None:
        return s
    s = escape_text(s)
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\t", "&#9;")
    return s


class Element:
    """An XML element: local `name`, namespace `xmlns`, `attrs`, and children (elements and text).

    Attribute keys are plain names, `xml:lang`, or `{uri}local` for other namespaced attributes.
    Use the methods to change an element: they drop any cached serialisation.

    An element inside a stanza with cached raw content knows that stanza by a weak reference
    (`_owner`), so that a change to it can drop the cache. A strong one would make every parsed
    stanza with a child a reference cycle (the stanza holds the child, the child the stanza),
    freed only by the cyclic garbage collector instead of at once: with a few cyclic objects
    per message, the collector took about a seventh of a busy server's time.
    """

    __slots__ = ("name", "xmlns", "attrs", "children", "_inner", "_owner", "_memo", "__weakref__")

    def __init__(self, name: str, xmlns: str = "", attrs: dict[str, str] | None = None,
                 children: list[Node] | None = None) -> None:
        self.name = name
        self.xmlns = xmlns
        self.attrs = attrs if attrs is not None else {}
        self.children = children if children is not None else []
        self._inner: bytes | None = None     # raw serialised content, see module docstring
        self._owner: _ref[Element] | None = None   # the top-level element whose _inner includes us
        self._memo: _Memo | None = None      # see serialize_stanza

    # -- reading ------------------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    def find(self, name: str, xmlns: str | None = None) -> Element | None:
        """First child element with this name (and namespace, when given)."""
        for child in self.children:
            if isinstance(child, Element) and child.name == name and (xmlns is None or child.xmlns == xmlns):
                return child
        return None

    def find_ns(self, xmlns: str) -> Element | None:
        """First child element in this namespace, whatever its name."""
        for child in self.children:
            if isinstance(child, Element) and child.xmlns == xmlns:
                return child
        return None

    def elements(self, name: str | None = None, xmlns: str | None = None) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element) and (name is None or child.name == name) \
                    and (xmlns is None or child.xmlns == xmlns):
                yield child

    def first_element(self) -> Element | None:
        for child in self.children:
            if isinstance(child, Element):
                return child
        return None

    @property
    def text(self) -> str:
        """The element's own text (not its descendants'), concatenated."""
        children = self.children
        if len(children) == 1 and isinstance(children[0], str):
            return children[0]
        return "".join(c for c in children if isinstance(c, str))

    def find_text(self, name: str, xmlns: str | None = None) -> str | None:
        child = self.find(name, xmlns)
        return None if child is None else child.text

    # -- changing -----------------------------------------------------------------------------
    def _changed(self) -> None:
        self._inner = None
        self._drop_owners_cache()

    def _drop_owners_cache(self) -> None:
        """Drop the raw content of the stanza that includes us, if it is still alive."""
        owner = self._owner
        if owner is not None and (top := owner()) is not None:
            top._inner = None

    def set(self, key: str, value: str | None) -> None:
        """Set an attribute; None removes it. Top-level attributes never invalidate raw content."""
        if value is None:
            self.attrs.pop(key, None)
        else:
            self.attrs[key] = value
        self._drop_owners_cache()

    def append(self, child: Node) -> Node:
        self.children.append(child)
        self._appended(child)
        return child

    def add(self, name: str, xmlns: str | None = None, attrs: dict[str, str] | None = None,
            text: str | None = None) -> Element:
        """Append and return a new child element; its namespace defaults to ours."""
        child = Element(name, self.xmlns if xmlns is None else xmlns, attrs)
        if text is not None:
            child.children.append(text)
        self.children.append(child)
        self._appended(child)
        return child

    def add_leaf(self, name: str, xmlns: str, attrs: dict[str, str], rendered: str | None = None) -> Element:
        """Append and return a new empty child element (no text, no children): the cheap way
        to stamp a stanza (<stanza-id/>, <delay/>). Its start tag goes straight onto the cached
        raw content: nothing else is serialised again.

        `rendered` is the child as the caller already wrote it (`<name xmlns="..." .../>`, its
        namespace declared and its attribute values escaped), which saves serialising it here:
        for a stamp made once per message (modules/mam/archiving.py)."""
        child = Element(name, xmlns, attrs)
        self.children.append(child)
        inner = self._inner
        if inner is None or self._owner is not None:
            self._changed()
            return child
        if rendered is None:
            rendered = _start_tag(child, self.xmlns) + "/>"
        self._inner = inner + rendered.encode()
        child._owner = _ref(self)
        return child

    def _appended(self, child: Node) -> None:
        # A child appended to a stanza whose raw content is cached goes at the end of that
        # content: the cache stays (a stamped <stanza-id/> or <delay/> costs no re-serialising).
        inner = self._inner
        if inner is None or self._owner is not None:
            self._changed()
        elif isinstance(child, Element):
            self._inner = inner + child.serialize(self.xmlns)
            _adopt(child, _ref(self))
        else:
            self._inner = inner + escape_text(child).encode()

    def remove(self, child: Node) -> None:
        self.children.remove(child)
        self._changed()

    def remove_all(self, name: str | None = None, xmlns: str | None = None) -> int:
        keep = [c for c in self.children if not (isinstance(c, Element) and (name is None or c.name == name)
                                                   and (xmlns is None or c.xmlns == xmlns))]
        removed = len(self.children) - len(keep)
        if removed:
            self.children = keep
            self._changed()
        return removed

    def set_text(self, text: str) -> None:
        """Replace the text of this element (child elements are kept)."""
        self.children = [c for c in self.children if isinstance(c, Element)]
        if text:
            self.children.insert(0, text)
        self._changed()

    def copy(self) -> Element:
        """A deep copy, detached from any owner; the raw content cache is shared (bytes are immutable)."""
        clone = Element(self.name, self.xmlns, dict(self.attrs),
                        [c.copy() if isinstance(c, Element) else c for c in self.children])
        if self._inner is not None:
            clone._inner = self._inner
            owner = _ref(clone)
            for child in clone.children:      # a change to them must drop the clone's cache
                if isinstance(child, Element):
                    _adopt(child, owner)
        return clone

    # -- writing ------------------------------------------------------------------------------
    def serialize(self, default_ns: str = "") -> bytes:
        """The element as UTF-8 bytes, inside a parent whose default namespace is `default_ns`.
        With its raw content cached (a stanza as read, perhaps stamped since), the attributes'
        part comes from `serialize_stanza`'s memo while they are equal to what it was made from:
        the delivered copy of a message (with the default namespace, after the <stanza-id/>
        stamp) reuses what the journal's or the archive's copy made."""
        inner = self._inner
        if inner is not None:
            memo = self._memo
            tail = memo[2] if memo is not None and memo[1] == self.attrs else _attributes(self).encode()
            return self._with_content(inner, tail, default_ns)
        out: list[str] = []
        _write(self, default_ns, out)
        return "".join(out).encode()

    def _with_content(self, inner: bytes, tail: bytes, default_ns: str) -> bytes:
        name = self.name.encode()
        if self.xmlns != default_ns:
            xmlns = _ATTR_CACHE.get(("xmlns", self.xmlns)) or _attr("xmlns", self.xmlns)
            return b"".join((b"<", name, xmlns.encode(), tail, b">", inner, b"</", name, b">"))
        return b"".join((b"<", name, tail, b">", inner, b"</", name, b">"))

    def serialize_stanza(self) -> bytes:
        """`serialize()` of a stanza that several parts of the message path keep (the compliance
        journal, the sender's and the recipient's archive copies): made once and reused while
        the stanza is unchanged, that is while its raw content is the same bytes object (every
        change through the methods replaces or drops it) and its attributes are equal. Only
        this makes the memo: a stanza that is serialised once pays no copy of its attributes."""
        inner = self._inner
        if inner is None:
            return self.serialize()
        memo = self._memo
        attrs = self.attrs
        if memo is not None and memo[1] == attrs:
            if memo[0] is inner:
                return memo[3]
            kept, tail = memo[1], memo[2]
        else:
            kept, tail = dict(attrs), _attributes(self).encode()
        data = self._with_content(inner, tail, "")
        self._memo = (inner, kept, tail, data)
        return data

    def __str__(self) -> str:
        return self.serialize().decode()

    def __repr__(self) -> str:
        text = str(self)
        return f"<Element {text[:200]}{'...' if len(text) > 200 else ''}>"


def _adopt(element: Element, owner: _ref[Element]) -> None:
    """Make `owner` (a weak reference) the top-level element whose cached raw content includes
    `element`'s subtree."""
    element._owner = owner
    for child in element.children:
        if isinstance(child, Element):
            _adopt(child, owner)


# An element's cached serialisation (Element.serialize_stanza): the raw content it was made
# from, a copy of the attributes it was made from, the attributes' part of the start tag (UTF-8,
# which `serialize` reuses), and the whole without a default namespace.
_Memo = tuple

_ATTR_CACHE: dict[tuple[str, str], str] = {}
_ATTR_CACHE_MAX = 20_000


def _attr(key: str, value: str) -> str:
    """` key="value"`, escaped. Addresses and types repeat across stanzas: cached; ids are new
    each time (a stanza's, an archive id), so caching them would only churn the cache."""
    if key == "id":
        return f' id="{escape_attr(value)}"'
    fragment = _ATTR_CACHE.get((key, value))
    if fragment is None:
        fragment = f' {key}="{escape_attr(value)}"'
        if len(_ATTR_CACHE) >= _ATTR_CACHE_MAX:
            _ATTR_CACHE.clear()
        _ATTR_CACHE[(key, value)] = fragment
    return fragment


def _start_tag(el: Element, default_ns: str) -> str:
    if el.xmlns != default_ns:
        return f"<{el.name}{_attr('xmlns', el.xmlns)}{_attributes(el)}"
    return f"<{el.name}{_attributes(el)}"


def _attributes(el: Element) -> str:
    """The element's attributes as they go in its start tag (namespaced ones with their own
    prefix declarations), without its namespace."""
    parts = []
    prefixes: dict[str, str] | None = None
    cached = _ATTR_CACHE.get
    for key, value in el.attrs.items():
        fragment = cached((key, value))       # _attr's cache, looked up here: most are in it
        if fragment is not None:
            parts.append(fragment)
        elif key == "id" and _ATTR_SPECIAL(value) is None:
            parts.append(f' id="{value}"')        # _attr's case for ids, without its two calls
        elif key[0] == "{":
            uri, local = key[1:].split("}", 1)
            prefixes = prefixes if prefixes is not None else {}
            prefix = prefixes.get(uri)
            if prefix is None:
                prefix = prefixes[uri] = f"ns{len(prefixes)}"
                parts.append(f' xmlns:{prefix}="{escape_attr(uri)}"')
            parts.append(f' {prefix}:{local}="{escape_attr(value)}"')
        else:
            parts.append(_attr(key, value))
    return "".join(parts)


def _write(el: Element, default_ns: str, out: list[str]) -> None:
    out.append(_start_tag(el, default_ns))
    if el._inner is not None:
        out.append(">")
        out.append(el._inner.decode())
        out.append(f"</{el.name}>")
        return
    if not el.children:
        out.append("/>")
        return
    out.append(">")
    for child in el.children:
        if isinstance(child, str):
            out.append(escape_text(child))
        else:
            _write(child, el.xmlns, out)
    out.append(f"</{el.name}>")


class XmlError(Exception):
    """Input that breaks the XML rules of RFC 6120; `condition` is the stream error to send."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text


class StreamHeader:
    """The attributes of an opening `<stream:stream>` tag."""

    __slots__ = ("xmlns", "content_ns", "attrs")

    def __init__(self, xmlns: str, content_ns: str | None, attrs: dict[str, str]) -> None:
        self.xmlns = xmlns            # namespace of the root element (streams or framing)
        self.content_ns = content_ns  # the default namespace declared on it (jabber:client ...)
        self.attrs = attrs


class StreamEnd:
    """The peer closed its stream (`</stream:stream>` or a framing `<close/>`)."""

    __slots__ = ()


STREAM_END = StreamEnd()
Event = Union[StreamHeader, Element, StreamEnd]


class StreamReader:
    """Incremental, restricted XML reader for one stream. `feed(bytes)` returns complete events.

    `framed=True` reads RFC 7395 WebSocket framing: each message is one complete element and
    `<open/>`/`<close/>` replace the stream root.
    """

    __slots__ = ("_buf", "_buf_start", "_clean", "_closed", "_depth", "_events", "_fed", "_inner_prefixes",
                 "_inner_start", "_last_end", "_mark", "_max_attr_items", "_parser", "_pending_decls",
                 "_quiet_header", "_raw_ok", "_root_decls", "_root_default_ns", "_root_qname", "_stack",
                 "_top_decls", "_top_start", "framed", "max_attrs", "max_depth", "max_stanza_size")

    def __init__(self, *, max_stanza_size: int = 262144, max_depth: int = 32,
                 max_attrs: int = 64, framed: bool = False) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self._max_attr_items = 2 * max_attrs
        self.framed = framed
        self._events: list[Event] = []
        self._stack: list[Element] = []    # open elements below the root
        self._depth = 0                    # 1 = root, 2 = top-level element
        self._fed = 0                      # bytes fed so far (absolute index of the next byte)
        self._mark = 0                     # start of the unfinished top-level element, or end of the last
        self._buf = bytearray()            # input bytes from self._buf_start on
        self._buf_start = 0
        self._top_start = -1               # absolute index of the current top-level element's start tag
        self._inner_start = -1             # absolute index of its content, once known
        self._top_decls: list[tuple[str, str]] = []
        self._raw_ok = True                # False when content depends on prefixes bound outside it
        self._inner_prefixes: dict[str, int] = {}
        self._pending_decls: list[tuple[str | None, str]] = []
        self._root_default_ns: str | None = None
        self._root_decls: list[tuple[str | None, str]] = []   # to rebuild the root after compact()
        self._root_qname = ""
        self._quiet_header = False         # replaying the root after compact(): no header event
        self._clean = False                # between stanzas with nothing left inside expat
        self._last_end = 0                 # absolute index just after the last complete element
        self._closed = False
        self._parser: expat.XMLParserType | None = self._new_parser()

    def _new_parser(self) -> expat.XMLParserType:
        p = expat.ParserCreate("UTF-8", " ")
        p.namespace_prefixes = True
        p.ordered_attributes = True
        p.buffer_text = False
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartNamespaceDeclHandler = self._ns_start
        p.EndNamespaceDeclHandler = self._ns_end
        p.StartDoctypeDeclHandler = self._forbidden_doctype
        p.EntityDeclHandler = self._forbidden_entity
        p.UnparsedEntityDeclHandler = self._forbidden_entity
        p.NotationDeclHandler = self._forbidden_entity
        p.ExternalEntityRefHandler = self._forbidden_entity
        p.ProcessingInstructionHandler = self._forbidden_pi
        p.CommentHandler = self._forbidden_comment
        p.SkippedEntityHandler = self._forbidden_entity
        return p

    # -- public -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[Event]:
        """Parse `data` and return the events it completed. Raises XmlError on bad input."""
        if self._closed:
            if data.strip():
                raise XmlError("not-well-formed", "data after the end of the stream")
            return []
        if self.framed:
            return self._feed_frame(data)
        if self._parser is None:
            self._revive()
        was_clean = self._clean
        self._parse(data)
        # Clean: between stanzas, and nothing but whitespace after the last complete element, so
        # expat holds no half-read token (see compact()).
        if self._depth == 1 and self._top_start < 0:
            after = self._fed - self._last_end
            if after <= len(data):
                self._clean = after <= 0 or not data[len(data) - after:].strip()
            else:
                self._clean = was_clean and not data.strip()
        else:
            self._clean = False
        # Bytes held since the last boundary: an unfinished element, or a tag expat still buffers.
        if self._fed - self._mark > self.max_stanza_size:
            raise XmlError("policy-violation",
                           f"stanza larger than the limit of {self.max_stanza_size} bytes")
        events, self._events = self._events, []
        return events

    def _parse(self, data: bytes) -> None:
        self._buf += data
        self._fed += len(data)
        assert self._parser is not None
        try:
            self._parser.Parse(data, False)
        except expat.ExpatError as exc:
            raise self._expat_error(exc) from None
        # Keep only the bytes the unfinished top-level element may still need.
        keep_from = self._top_start if self._top_start >= 0 else self._fed
        drop = keep_from - self._buf_start
        if drop > 0:
            del self._buf[:drop]
            self._buf_start = keep_from

    def compact(self) -> bool:
        """Free the parser of an idle stream. Only between stanzas, with nothing left half-read;
        the next data gets a new parser, first fed a copy of the stream header (same root name
        and namespace declarations) so that everything after it parses as before. An expat
        parser is most of what an idle connection costs in memory."""
        if (self.framed or self._parser is None or self._closed or self._depth != 1
                or not self._clean or not self._root_qname):
            return False
        self._parser = None
        self._buf = bytearray()
        self._buf_start = self._fed = self._mark = 0
        return True

    def release(self) -> None:
        """The stream went on elsewhere (a connection moved to another worker process): free
        the parser and buffers for good; anything fed later is refused as after the end."""
        self._parser = None
        self._buf = bytearray()
        self._buf_start = self._fed = self._mark = 0
        self._closed = True

    def _revive(self) -> None:
        self._parser = self._new_parser()
        self._depth = 0
        self._quiet_header = True
        decls = "".join(f' xmlns="{escape_attr(uri)}"' if prefix is None else f' xmlns:{prefix}="{escape_attr(uri)}"'
                        for prefix, uri in self._root_decls)
        self._parse(f"<{self._root_qname}{decls}>".encode())
        self._quiet_header = False


    def _feed_frame(self, data: bytes) -> list[Event]:
        """RFC 7395: one WebSocket message is one complete element, parsed as its own document."""
        if len(data) > self.max_stanza_size:
            raise XmlError("policy-violation", f"stanza larger than the limit of {self.max_stanza_size} bytes")
        self._parser = self._new_parser()
        self._buf = bytearray(data)
        self._buf_start = self._fed = self._mark = 0
        self._depth = 1
        try:
            self._parser.Parse(data, True)
        except expat.ExpatError as exc:
            raise self._expat_error(exc) from None
        events, self._events = self._events, []
        self._buf = bytearray()
        self._parser = None        # a WebSocket message is a document of its own: nothing to keep
        return events

    def reset(self) -> None:
        """Start a new document (stream restart after STARTTLS or SASL)."""
        self.__init__(max_stanza_size=self.max_stanza_size, max_depth=self.max_depth,
                      max_attrs=self.max_attrs, framed=self.framed)

    # -- expat handlers -----------------------------------------------------------------------
    def _ns_start(self, prefix: str | None, uri: str) -> None:
        if self._depth == 0:
            if prefix is None:
                self._root_default_ns = uri
            if not self._quiet_header:
                self._root_decls.append((prefix, uri))
            return
        if self._depth >= 2:
            self._inner_prefixes[prefix or ""] = self._inner_prefixes.get(prefix or "", 0) + 1
        self._pending_decls.append((prefix, uri))

    def _ns_end(self, prefix: str | None) -> None:
        key = prefix or ""
        count = self._inner_prefixes.get(key)
        if count:
            if count == 1:
                del self._inner_prefixes[key]
            else:
                self._inner_prefixes[key] = count - 1

    def _start(self, qname: str, attr_list: list[str]) -> None:
        # On the hot path (every element of every stanza): keep the work per call small.
        depth = self._depth + 1
        self._depth = depth
        if depth > self.max_depth:
            raise XmlError("policy-violation", f"elements nested deeper than {self.max_depth}")
        if len(attr_list) > self._max_attr_items:
            raise XmlError("policy-violation", f"more than {self.max_attrs} attributes on one element")
        hit = _NAME_CACHE.get(qname)
        uri, local = hit if hit is not None else _split_name(qname)
        attrs: dict[str, str] = {}
        if attr_list:
            it = iter(attr_list)
            for key, value in zip(it, it):
                if " " in key:
                    qkey = key
                    auri, alocal = _split_name(key)
                    key = "xml:" + alocal if auri == ns.XML else "{" + auri + "}" + alocal
                    if auri != ns.XML and depth > 2 and not self._prefix_ok(qkey):
                        self._raw_ok = False
                attrs[key] = value
        if depth == 1 and not self.framed:
            if not self._quiet_header:
                self._events.append(StreamHeader(uri, self._root_default_ns, attrs))
                parts = qname.split(" ")
                self._root_qname = f"{parts[2]}:{parts[1]}" if len(parts) == 3 else parts[-1]
            self._mark = self._fed_position()
            self._last_end = self._tag_end(self._parser.CurrentByteIndex)
            self._pending_decls.clear()
            return
        el = Element(local, uri, attrs)
        stack = self._stack
        if depth == 2:
            self._top_start = self._parser.CurrentByteIndex
            self._inner_start = -1
            self._raw_ok = True
            pending = self._pending_decls
            if pending:
                self._top_decls = [(p, u) for p, u in pending if p is not None]
                pending.clear()
            elif self._top_decls:
                self._top_decls = []
            if self._inner_prefixes:
                self._inner_prefixes = {}
        else:
            if self._inner_start < 0:
                self._inner_start = self._parser.CurrentByteIndex
            if self._pending_decls:
                self._pending_decls.clear()
            if qname.count(" ") == 2 and not self._prefix_ok(qname):
                self._raw_ok = False
            el._owner = _ref(stack[0])      # one weak reference per stanza: ref() reuses it
            stack[-1].children.append(el)
        stack.append(el)

    def _tag_end(self, pos: int) -> int:
        """Absolute index just after the tag that starts at `pos` (an end tag, or the start tag of
        an empty element whose end expat reports after it). -1 when it is not in the buffer."""
        base = self._buf_start
        if pos - base >= len(self._buf) or self._buf[pos - base:pos - base + 1] != b"<":
            return pos            # an empty element: expat reports its end after the tag
        close = self._buf.find(b">", pos - base)
        return -1 if close < 0 else close + 1 + base

    def _prefix_ok(self, qname: str) -> bool:
        prefix = qname.rsplit(" ", 1)[1]
        return prefix in self._inner_prefixes or any(p == prefix for p, _ in self._top_decls)

    def _end(self, qname: str) -> None:
        depth = self._depth
        self._depth = depth - 1
        if depth == 1 and not self.framed:
            self._closed = True
            self._events.append(STREAM_END)
            return
        stack = self._stack
        el = stack.pop()
        if stack:
            return
        # A top-level element is complete.
        pos = self._parser.CurrentByteIndex
        inner_start = self._inner_start
        if inner_start >= 0 and self._raw_ok and not self._top_decls:
            base = self._buf_start
            el._inner = bytes(self._buf[inner_start - base:pos - base])
        self._last_end = self._tag_end(pos)
        end = pos if pos > self._mark else self._mark
        if end - self._top_start > self.max_stanza_size:
            raise XmlError("policy-violation",
                           f"stanza larger than the limit of {self.max_stanza_size} bytes")
        self._top_start = -1
        self._mark = end
        self._events.append(el)

    def _chars(self, data: str) -> None:
        depth = self._depth
        if depth >= 2:
            if self._inner_start < 0 and depth == 2:
                self._inner_start = self._parser.CurrentByteIndex
            children = self._stack[-1].children
            if children and isinstance(children[-1], str):
                children[-1] += data
            else:
                children.append(data)
        elif depth == 1:
            if data.strip():
                raise XmlError("bad-format", "text outside any stanza")
            self._mark = self._fed_position()

    def _fed_position(self) -> int:
        # expat's index of the current event; the end of an event is not exposed, but every
        # boundary we need is followed by further input, so the current index is a safe lower bound.
        return max(self._parser.CurrentByteIndex, self._mark)

    def _forbidden_doctype(self, *args: object) -> None:
        raise XmlError("restricted-xml", "a DTD (DOCTYPE) is not allowed in XMPP")

    def _forbidden_entity(self, *args: object) -> None:
        raise XmlError("restricted-xml", "entity declarations and references are not allowed in XMPP")

    def _forbidden_pi(self, *args: object) -> None:
        raise XmlError("restricted-xml", "processing instructions are not allowed in XMPP")

    def _forbidden_comment(self, *args: object) -> None:
        raise XmlError("restricted-xml", "comments are not allowed in XMPP")

    def _expat_error(self, exc: expat.ExpatError) -> XmlError:
        if exc.code in (expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY],
                        expat.errors.codes[expat.errors.XML_ERROR_RECURSIVE_ENTITY_REF],
                        expat.errors.codes[expat.errors.XML_ERROR_ENTITY_DECLARED_IN_PE]):
            return XmlError("restricted-xml", "entity references other than the predefined five are not allowed")
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX]:
            return XmlError("invalid-namespace", "an element uses a namespace prefix that is not declared")
        return XmlError("not-well-formed", f"the XML is not well-formed ({expat.errors.messages[exc.code]})")


def remap_namespace(el: Element, old: str, new: str) -> None:
    """Move a stanza between stream namespaces (jabber:component:accept <-> jabber:client).
    The raw content cache stays valid: unprefixed content inherits the stream's namespace."""
    if el.xmlns == old:
        el.xmlns = new
    for child in el.children:
        if isinstance(child, Element):
            remap_namespace(child, old, new)


def parse(data: str | bytes) -> Element:
    """Parse one standalone element: stored stanzas, tests. Store stanzas with
    `serialize("")` so that their namespace is written out and comes back."""
    reader = StreamReader(framed=True, max_stanza_size=1 << 24)
    events = reader.feed(data.encode() if isinstance(data, str) else data)
    if len(events) != 1 or not isinstance(events[0], Element):
        raise XmlError("not-well-formed", "expected exactly one element")
    el = events[0]
    el._inner = None
    return el
