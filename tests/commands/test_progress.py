"""CLI progress bars off a terminal: plain lines, a few of them, never carriage-return redraws."""
from __future__ import annotations

import io

from savatar.commands import progress
from savatar.commands.progress import PlainLines, progress_bar


class Clock:
    """time.monotonic stand-in: the test decides how much time passes, not the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_line_every_few_seconds_and_one_at_the_end(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="refine", unit="it", file=out, leave=False)
    for i in range(1000):
        clock.now = i * 0.05  # 50 s in all
        bar.update(1)
        bar.refresh()  # the worst case: a redraw on every step, as several commands do
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 8 <= len(lines) <= 13, lines  # about one per 5 s, plus the first and the last
    assert lines[-1].startswith("refine") and "1000/1000" in lines[-1], lines[-1]  # the end, kept


def test_on_a_terminal_tqdm_redraws_in_place():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with progress_bar(total=10, desc="x", file=out) as bar:
        for _ in range(10):
            bar.update(1)
    assert "\r" in out.getvalue()


def test_plain_lines_pass_other_text_through():
    out = io.StringIO()
    stream = PlainLines(out, interval=5.0)
    stream.write("message")
    stream.write("\n")  # the message's own newline, not a bar closing
    stream.write("\r  ")  # a clearing redraw says nothing
    assert out.getvalue() == "message\n"
