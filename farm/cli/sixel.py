"""``farm preview --show``: the sheet drawn in the terminal as sixel graphics (a fixed 6x6x6 colour
cube, no dependency) where the environment says the terminal draws them: a tty whose ``TERM`` or
``TERM_PROGRAM`` names a known sixel terminal, or ``FARM_SIXEL=1``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Terminals that draw sixel, as they name themselves in TERM or TERM_PROGRAM (lowercase parts).
SIXEL_TERMINALS = ("mlterm", "foot", "wezterm", "contour", "yaft", "xterm-sixel", "mintty", "iterm.app", "konsole")
#: Sheets wider than this are drawn scaled down to it (terminals clip wider images).
MAX_WIDTH = 1600


# Read from the environment, not asked of the terminal: the query's raw-mode round trip would
# hang on a pipe or a CI log.
def sixel_terminal(env: Mapping[str, str], is_tty: bool) -> bool:
    """The terminal on stdout says it draws sixel images: a tty whose TERM or TERM_PROGRAM names a
    known sixel terminal, or FARM_SIXEL=1."""
    if env.get("FARM_SIXEL") == "1":
        return True
    if not is_tty:
        return False
    names = f"{env.get('TERM', '')} {env.get('TERM_PROGRAM', '')}".lower()
    return any(t in names for t in SIXEL_TERMINALS)


def to_sixel(image: np.ndarray) -> str:
    """``image`` (BGR, uint8) as a sixel escape sequence, newline-terminated."""
    h, w = image.shape[:2]
    if w > MAX_WIDTH:
        import cv2

        image = cv2.resize(image, (MAX_WIDTH, max(1, h * MAX_WIDTH // w)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    levels = (image.astype(np.uint16) * 5 + 127) // 255  # 0..5 per channel
    codes = levels[..., 2] * 36 + levels[..., 1] * 6 + levels[..., 0]  # R, G, B cube index
    out = ["\x1bPq", f'"1;1;{w};{h}']
    for c in np.unique(codes):
        r, g, b = c // 36, c // 6 % 6, c % 6
        out.append(f"#{c};2;{r * 20};{g * 20};{b * 20}")
    for top in range(0, h, 6):
        band = codes[top : top + 6]
        weights = (1 << np.arange(band.shape[0]))[:, None]
        rows = []
        for c in np.unique(band):
            bits = ((band == c) * weights).sum(axis=0)
            rows.append(f"#{c}" + _run_length("".join(chr(63 + int(v)) for v in bits)))
        out.append("$".join(rows) + "-")
    out.append("\x1b\\")
    return "".join(out) + "\n"


def _run_length(s: str) -> str:
    """Sixel's repeat form ``!N<char>`` for runs longer than 3."""
    parts, i = [], 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        parts.append(f"!{j - i}{s[i]}" if j - i > 3 else s[i] * (j - i))
        i = j
    return "".join(parts)
