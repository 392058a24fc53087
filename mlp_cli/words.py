"""Counted words in messages: "1 step", "2 steps" (never "1 steps")."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``plural(1, "step")`` -> "1 step"; ``plural(3, "step")`` -> "3 steps"; ``nouns`` for an
    irregular plural."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
