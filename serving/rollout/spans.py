"""In-place edits of a text-format models.config: only the changed fields' text is rewritten.

protobuf has no comment-keeping round trip, so an edit rewrites just the `model_version_policy`
and the `version_labels` entries that change, found with protobuf's own tokenizer; comments,
layout and every other model stay byte for byte. An edit that would drop a comment, or a file
laid out in a way this cannot follow, is refused. The result is parsed again and must equal the
intended config.

Example:
    text = edit_text(Path("models.config").read_text(), new_config)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format

from serving.rollout.config_edit import ModelConfig, ModelServerConfig, RefusalError

OPEN = {"{": "}", "<": ">"}
EDITABLE = ("model_version_policy", "version_labels")
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Field:
    """One `name: value` or `name { ... }` of a message body: character span and body tokens."""

    name: str
    start: int
    end: int
    body: tuple[int, int] | None  # token indexes inside the braces, for a message value


def _tokenize(text: str) -> tuple[list[_Token], list[_Token]]:
    """protobuf's text-format tokens with their offsets: (fields' tokens, comments)."""
    tokenizer = text_format.Tokenizer(text.split("\n"), skip_comments=False)
    tokens, comments, pos = [], [], 0
    while not tokenizer.AtEnd():
        start = _SPACE.match(text, pos).end()
        if not text.startswith(tokenizer.token, start):
            raise RefusalError(f"cannot follow the text at line {_line(text, start)}")
        token = _Token(tokenizer.token, start, start + len(tokenizer.token))
        (comments if token.text.startswith("#") else tokens).append(token)
        pos = token.end
        tokenizer.NextToken()
    return tokens, comments


def _fields(tokens: list[_Token], lo: int, hi: int) -> list[_Field]:
    """The fields of the message body tokens[lo:hi]."""
    fields, i = [], lo
    while i < hi:
        name = tokens[i].text
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise RefusalError(f"cannot follow {name!r} where a field name belongs")
        j = i + 1 + (i + 1 < hi and tokens[i + 1].text == ":")
        if j >= hi:
            raise RefusalError(f"field {name} has no value")
        if tokens[j].text in OPEN:
            depth, k = 0, j
            while k < hi:
                depth += tokens[k].text in OPEN
                depth -= tokens[k].text in OPEN.values()
                if depth == 0:
                    break
                k += 1
            body = (j + 1, k)
        else:
            if tokens[j].text == "[":
                raise RefusalError(f"field {name} is written as a list; write one entry a field")
            k, body = j, None
            while k + 1 < hi and tokens[k + 1].text[:1] in "\"'":  # "a" "b" concatenates
                k += 1
        if k + 1 < hi and tokens[k + 1].text in ",;":
            k += 1
        fields.append(_Field(name, tokens[i].start, tokens[k].end, body))
        i = k + 1
    return fields


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _indent(text: str, pos: int) -> str:
    """The leading blanks of the line holding `pos`."""
    return re.match(r"[ \t]*", text[text.rfind("\n", 0, pos) + 1 :]).group()


def _model_blocks(text: str, tokens: list[_Token]) -> list[tuple[_Field, list[_Field]]]:
    """Each `config { ... }` of model_config_list, with the fields inside it, in file order."""
    top = [f for f in _fields(tokens, 0, len(tokens)) if f.name == "model_config_list"]
    if len(top) != 1 or top[0].body is None:
        raise RefusalError("cannot find the model_config_list block")
    blocks = []
    for field in _fields(tokens, *top[0].body):
        if field.name != "config" or field.body is None:
            raise RefusalError(f"model_config_list holds {field.name!r}, not only config blocks")
        blocks.append((field, _fields(tokens, *field.body)))
    return blocks


def _one_line(message) -> str:
    return text_format.MessageToString(message, as_one_line=True)


def _label_entry(key: str, version: int) -> str:
    entry = ModelConfig()
    entry.version_labels[key] = version
    return _one_line(entry)


class _Edits:
    """Replacements of character spans, applied back to front."""

    def __init__(self, text: str, comments: list[_Token]):
        self.text, self.comments, self.spans = text, comments, []

    def replace(self, owner: str, field: _Field, new: str) -> None:
        inside = [c for c in self.comments if field.start <= c.start < field.end]
        if inside:
            comment = inside[0]
            raise RefusalError(
                f"cannot edit {owner}'s {field.name} without dropping the comment on line "
                f"{_line(self.text, comment.start)}: {comment.text.strip()!r}; move it outside "
                f"that field"
            )
        start, end = field.start, field.end
        if not new:  # a removed field takes its line with it when it is alone on it
            line_start = self.text.rfind("\n", 0, start) + 1
            line_end = self.text.find("\n", end)
            line_end = len(self.text) if line_end < 0 else line_end
            if not self.text[line_start:start].strip() and not self.text[end:line_end].strip():
                start, end = line_start, min(line_end + 1, len(self.text))
            else:  # and the blanks before it
                start = line_start + len(self.text[line_start:start].rstrip(" \t"))
        self.spans.append((start, end, new))

    def insert_after(self, field: _Field, lines: list[str]) -> None:
        line_end = self.text.find("\n", field.end)
        line_end = len(self.text) if line_end < 0 else line_end
        rest = self.text[field.end : line_end].strip()
        if not rest or rest.startswith("#"):  # on lines of their own, after the line's comment
            indent = _indent(self.text, field.start)
            self.spans.append((line_end, line_end, "".join(f"\n{indent}{x}" for x in lines)))
        else:
            self.spans.append((field.end, field.end, "".join(f" {x}" for x in lines)))

    def insert_before_close(self, block: _Field, lines: list[str]) -> None:
        close = block.end - 1
        line_start = self.text.rfind("\n", 0, close) + 1
        if not self.text[line_start:close].strip():
            indent = self.text[line_start:close] + "  "
            self.spans.append((line_start, line_start, "".join(f"{indent}{x}\n" for x in lines)))
        else:
            self.spans.append((close, close, "".join(f"{x} " for x in lines)))

    def result(self) -> str:
        text = self.text
        for start, end, new in sorted(self.spans, key=lambda s: (s[0], s[1]), reverse=True):
            text = text[:start] + new + text[end:]
        return text


def _edit_model(edits: _Edits, block, fields, old, new) -> None:
    name = new.name
    policies = [f for f in fields if f.name == "model_version_policy"]
    entries = [f for f in fields if f.name == "version_labels"]
    added: list[str] = []
    if old.model_version_policy != new.model_version_policy:
        line = (
            f"model_version_policy {{ {_one_line(new.model_version_policy)} }}"
            if new.HasField("model_version_policy")
            else ""
        )
        if policies:
            edits.replace(name, policies[-1], line)
            policies = policies if line else []
        elif line:
            added.append(line)
    if dict(old.version_labels) != dict(new.version_labels):
        wanted, kept = dict(new.version_labels), set()
        for entry in entries:
            parsed = text_format.Parse(edits.text[entry.start : entry.end], ModelConfig())
            ((key, version),) = parsed.version_labels.items()
            if key in wanted and key not in kept:
                kept.add(key)
                if wanted[key] != version:
                    edits.replace(name, entry, _label_entry(key, wanted[key]))
            else:
                edits.replace(name, entry, "")
                entries = [e for e in entries if e is not entry]
        added += [_label_entry(k, wanted[k]) for k in sorted(wanted) if k not in kept]
    anchor = (entries or policies or [None])[-1]  # new lines go after it, never a removed one
    if added:
        if anchor is not None:
            edits.insert_after(anchor, added)
        else:
            edits.insert_before_close(block, added)


def edit_text(text: str, new: ModelServerConfig) -> str:
    """`text` (a parsable models.config) edited in place to hold `new`.

    Raises:
        RefusalError: The change touches more than versions and labels, would drop a comment,
            or the file is laid out in a way this does not follow.
    """
    old = text_format.Parse(text, ModelServerConfig())
    if old == new:
        return text
    olds, news = old.model_config_list.config, new.model_config_list.config
    if [m.name for m in olds] != [m.name for m in news]:
        raise RefusalError("cannot add, remove or reorder models in place")
    tokens, comments = _tokenize(text)
    blocks = _model_blocks(text, tokens)
    if len(blocks) != len(olds):
        raise RefusalError("cannot match the config blocks with the models")
    edits = _Edits(text, comments)
    for (block, fields), before, after in zip(blocks, olds, news, strict=True):
        if before == after:
            continue
        rest_before, rest_after = type(before)(), type(after)()
        rest_before.CopyFrom(before)
        rest_after.CopyFrom(after)
        for message in (rest_before, rest_after):
            for field in EDITABLE:
                message.ClearField(field)
        if rest_before != rest_after:
            raise RefusalError(f"cannot edit {after.name} in place beyond {' and '.join(EDITABLE)}")
        _edit_model(edits, block, fields, before, after)
    result = edits.result()
    if text_format.Parse(result, ModelServerConfig()) != new:
        raise RefusalError("the in-place edit does not give the intended config")
    return result
