"""The progress bar of a tuning run (tqdm): trials done, failures, and the best time so far.

Without tqdm (the `tune` extra), or with show=False, nothing is drawn.
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, title: str, show: bool = True) -> None:
        self.bar = None
        self.failures = 0
        self.best: float | None = None
        if show:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=title, unit="trial", file=sys.stderr, dynamic_ncols=True,
                            leave=True)

    def trial(self, ok: bool, seconds: float | None) -> None:
        if not ok:
            self.failures += 1
        elif self.best is None or seconds < self.best:
            self.best = seconds
        if self.bar is not None:
            best = "-" if self.best is None else f"{1e3 * self.best:.4g} ms"
            self.bar.set_postfix_str(f"best {best}, failed {self.failures}", refresh=False)
            self.bar.update(1)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["Progress"]
