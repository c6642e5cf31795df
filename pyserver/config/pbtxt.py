"""Triton's config.pbtxt: protobuf's text format, read without protobuf.

The text is parsed into the JSON shape of Triton's ModelConfig (what triton_json.from_triton
takes), so a config.pbtxt and a config.toml end in the same check. The parser knows which of
ModelConfig's fields repeat and which are maps (`parameters { key: "k" value { string_value:
"v" } }`); any other field given twice is an error, as protobuf's own parser says. Errors name
the file, the line and the column.
"""

from __future__ import annotations

import re
from typing import Any

from pyserver.errors import ModelLoadError

# ModelConfig's repeated fields (any depth), and its map fields (key -> value).
_REPEATED = frozenset({
    "input", "output", "instance_group", "model_warmup", "preferred_batch_size", "dims",
    "gpus", "versions", "cc_model_filenames", "batch_input", "batch_output", "shape",
    "secondary_devices", "profile", "agents", "source_input", "kind_string",
})
_MAPS = frozenset({"parameters", "priority_queue_policy", "inputs", "metric_tags", "host_policy"})
MAX_DEPTH = 32  # nesting of messages; ModelConfig needs 5

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[fF]?)
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[:{}\[\]<>,;])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}
_CLOSE = {"{": "}", "<": ">"}


class _Token:
    __slots__ = ("col", "kind", "line", "text")

    def __init__(self, kind: str, text: str, line: int, col: int) -> None:
        self.kind = kind
        self.text = text
        self.line = line
        self.col = col

    def describe(self) -> str:
        return "the end of the file" if self.kind == "end" else repr(self.text)


def parse(text: str, source: str) -> dict[str, Any]:
    """The ModelConfig in `text` (read from `source`) in Triton's JSON shape."""
    return _Parser(text, source).document()


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.tokens = self._tokenize(text)
        self.position = 0

    def _tokenize(self, text: str) -> list[_Token]:
        tokens: list[_Token] = []
        line, line_start, position = 1, 0, 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise ModelLoadError(
                    f"{self.source}:{line}:{position - line_start + 1}: unexpected character "
                    f"{text[position]!r}"
                )
            kind = match.lastgroup
            assert kind is not None
            if kind != "space":
                tokens.append(_Token(kind, match.group(), line, position - line_start + 1))
            newlines = match.group().count("\n")
            if newlines:
                line += newlines
                line_start = match.start() + match.group().rindex("\n") + 1
            position = match.end()
        tokens.append(_Token("end", "", line, position - line_start + 1))
        return tokens

    # -- tokens ---------------------------------------------------------------------------------

    def peek(self) -> _Token:
        return self.tokens[self.position]

    def take(self) -> _Token:
        token = self.tokens[self.position]
        if token.kind != "end":
            self.position += 1
        return token

    def error(self, token: _Token, expected: str) -> ModelLoadError:
        return ModelLoadError(
            f"{self.source}:{token.line}:{token.col}: expected {expected}, got {token.describe()}"
        )

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind == "punct" and token.text == text:
            self.position += 1
            return True
        return False

    # -- the grammar ----------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        fields = self.message(None, 0)
        return self.shape(fields)

    def message(self, close: str | None, depth: int) -> list[tuple[_Token, Any]]:
        """Fields up to `close` (None: the end of the file), each (name token, value)."""
        if depth > MAX_DEPTH:
            raise self.error(self.peek(), f"at most {MAX_DEPTH} nested messages")
        fields: list[tuple[_Token, Any]] = []
        while True:
            token = self.peek()
            if close is None and token.kind == "end":
                return fields
            if close is not None and token.kind == "punct" and token.text == close:
                self.take()
                return fields
            if token.kind != "ident" or token.text.startswith("-"):
                raise self.error(token, "a field name" + (f" or {close!r}" if close else ""))
            self.take()
            fields.append((token, self.field_value(token, depth)))
            if not self.accept(","):
                self.accept(";")

    def field_value(self, name: _Token, depth: int) -> Any:
        if self.accept(":"):
            token = self.peek()
            if token.kind == "punct" and token.text == "[":
                self.take()
                return _List(self.list_values(depth))
            if token.kind == "punct" and token.text in _CLOSE:
                self.take()
                return self.shape(self.message(_CLOSE[token.text], depth + 1))
            return self.scalar()
        token = self.peek()
        if token.kind == "punct" and token.text in _CLOSE:
            self.take()
            return self.shape(self.message(_CLOSE[token.text], depth + 1))
        if token.kind == "punct" and token.text == "[":  # a list of messages needs no ':'
            self.take()
            return _List(self.list_values(depth))
        raise self.error(token, f"':' or '{{' after the field name {name.text!r}")

    def list_values(self, depth: int) -> list[Any]:
        values: list[Any] = []
        if self.accept("]"):
            return values
        while True:
            token = self.peek()
            if token.kind == "punct" and token.text in _CLOSE:
                self.take()
                values.append(self.shape(self.message(_CLOSE[token.text], depth + 1)))
            else:
                values.append(self.scalar())
            if self.accept("]"):
                return values
            if not self.accept(","):
                raise self.error(self.peek(), "',' or ']' in a list")

    def scalar(self) -> Any:
        token = self.take()
        if token.kind == "string":
            parts = [self.unquote(token)]
            while self.peek().kind == "string":  # adjacent strings concatenate
                parts.append(self.unquote(self.take()))
            return "".join(parts)
        if token.kind == "number":
            text = token.text.rstrip("fF") if not token.text.lower().startswith(("0x", "-0x")) \
                else token.text
            try:
                if re.fullmatch(r"-?\d+", text):
                    return int(text)
                if re.fullmatch(r"-?0[xX][0-9a-fA-F]+", text):
                    return int(text, 16)
                return float(text)
            except ValueError:
                raise self.error(token, "a number") from None
        if token.kind == "ident":
            if token.text in ("true", "True", "t"):
                return True
            if token.text in ("false", "False", "f"):
                return False
            return token.text  # an enum value (TYPE_FP32, KIND_GPU), or inf/nan
        raise self.error(token, "a value (a string, a number, a name or a message)")

    def unquote(self, token: _Token) -> str:
        body = token.text[1:-1]
        out: list[str] = []
        i = 0
        while i < len(body):
            char = body[i]
            if char != "\\":
                out.append(char)
                i += 1
                continue
            code = body[i + 1]  # the token's pattern guarantees a character after "\"
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i += 2
            elif code in "xX":
                digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
                if digits is None:
                    raise self.error(token, "\\x followed by hex digits in a string")
                out.append(chr(int(digits.group(), 16)))
                i += 2 + len(digits.group())
            elif code in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1:])
                assert digits is not None
                out.append(chr(int(digits.group(), 8)))
                i += 1 + len(digits.group())
            else:
                raise self.error(token, "a known escape sequence in a string")
        return "".join(out)

    # -- the JSON shape -------------------------------------------------------------------------

    def shape(self, fields: list[tuple[_Token, Any]]) -> dict[str, Any]:
        """Fields as a JSON object: repeated fields as lists, maps as objects, the rest once."""
        out: dict[str, Any] = {}
        for token, value in fields:
            name = token.text
            if name in _MAPS:
                entry = value if isinstance(value, dict) else None
                if entry is None or set(entry) - {"key", "value"} or "key" not in entry:
                    raise self.error(token, f"{name} {{ key: ... value: ... }}")
                target = out.setdefault(name, {})
                key = str(entry["key"])
                if key in target:
                    raise self.error(token, f"each key of {name} once (got {key!r} again)")
                target[key] = entry.get("value", {})
            elif name in _REPEATED:
                items = list(value) if isinstance(value, _List) else [value]
                out.setdefault(name, []).extend(items)
            elif name in out:
                raise self.error(token, f"the field {name!r} once (it does not repeat)")
            elif isinstance(value, _List):
                raise self.error(token, f"one value for {name!r} (it does not repeat), not a list")
            else:
                out[name] = value
        return out


class _List(list[Any]):
    """A `[...]` value, told apart from a message's own fields."""
