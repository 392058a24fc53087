"""Words in messages: counted ("1 step", "2 steps", never "1 steps") and suggested ("did you mean
'sgd'?", case ignored), one rule each for every command."""

from __future__ import annotations

from collections.abc import Iterable


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "step")`` -> "1 step"; ``plural(3, "step")`` -> "3 steps"; ``nouns`` for an
    irregular plural."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def did_you_mean(word: str, options: Iterable[object]) -> str:
    """`` (did you mean 'sgd'?)`` for the closest of ``options``, case ignored (SGD -> sgd); '' if none is close."""
    import difflib  # here, not at the top: this module is read at every start-up, a suggestion is rare

    lowered = {str(option).lower(): str(option) for option in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escape sequences, a tab, a newline,
    a bell) written out as its Python escape: what a record holds is shown, never obeyed."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
