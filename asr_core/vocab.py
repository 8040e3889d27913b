"""The 29 output classes: index 0 is the CTC blank, then space, apostrophe and a-z."""
import re

BLANK = 0
BLANK_SYMBOL = "·"  # how the blank is drawn in the views
LABELS = ["<blank>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
NUM_CLASSES = len(LABELS)  # 29
_INDEX = {ch: i for i, ch in enumerate(LABELS) if i != BLANK}

_DIGITS = "zero one two three four five six seven eight nine".split()


def normalize_text(text: str) -> str:
    """Lower-case, digits spelled out, everything outside the vocabulary turned into spaces."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    return " ".join(text.split())


def encode(text: str) -> list[int]:
    """Text to class indices (the text is normalized first)."""
    return [_INDEX[ch] for ch in normalize_text(text)]


def decode(ids) -> str:
    """Class indices to text; blanks are dropped."""
    return "".join(LABELS[i] for i in ids if i != BLANK)


def display(i: int) -> str:
    """A printable symbol for a class: blank as '·', space as '␣'."""
    return {BLANK: BLANK_SYMBOL, 1: "␣"}.get(i, LABELS[i])
