"""Text from outside on an operator's screen, literally: heartbeat content, dead-letter headers,
the registry, what another process answered.

Two things could turn such text into something else on the way to a terminal: rich reads
``[...]`` in a string as markup (``[/x]`` raises ``MarkupError``, ``[link=...]`` makes a
hyperlink, ``:smile:`` an emoji), and a terminal acts on control characters (``\\x1b[...`` moves
the cursor, recolours, rewrites the title, or starts a hyperlink). So such text goes to rich as a
``Text`` (never parsed as markup) and every character that does not print is shown as its Python
escape: ESC as ``\\x1b``, a tab as ``\\t``, a right-to-left override as ``\\u202e``. A backslash
already in the text is left as it is, so ``\\x1b`` on screen may also be those four characters:
``--json`` gives the exact value (JSON escapes control characters too).
"""

from __future__ import annotations

from rich.text import Text


def visible(text: str) -> str:
    """``text`` with every character that is not printable (``str.isprintable``: control
    characters, line breaks, format characters) replaced by its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def literal(text: str, style: str = "") -> Text:
    """``text`` for rich: shown as these characters, in ``style``."""
    return Text(visible(text), style=style)
