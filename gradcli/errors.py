"""The errors gradcli reports: each is bad input, exits 2 and prints one clear message."""


class GradcliError(Exception):
    """Bad input of any kind: the message is what the user sees (after ``error: ``)."""

    exit_code = 2


class SourceError(GradcliError):
    """An error about a place in the program: shown with line, column and a caret."""

    def __init__(self, message, text="", pos=None):
        self.reason = message
        self.text = text
        self.pos = pos
        self.line, self.column = position(text, pos) if pos is not None else (None, None)
        super().__init__(self._render())

    def _render(self):
        if self.pos is None:
            return self.reason
        return f"line {self.line}, column {self.column}: {self.reason}\n{caret(self.text, self.pos)}"


class ParseError(SourceError):
    """The program text is not in the language (or names something that does not exist)."""


class EvalError(SourceError):
    """An op cannot run on the values it got: shapes that do not fit, an index out of range."""


class BindingError(GradcliError):
    """A NAME=VALUE binding, a values file or an --upstream value is wrong or missing."""


def did_you_mean(name, candidates):
    """``; did you mean tanh?`` when a candidate is close to ``name``, else nothing."""
    import difflib  # only on error paths

    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def position(text, pos):
    """1-based (line, column) of character offset ``pos`` in ``text``."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def caret(text, pos, width=76):
    """The line holding ``pos`` and a caret under it, cut to ``width`` around the caret."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start:end if end >= 0 else len(text)].expandtabs(1).rstrip("\r")
    col = pos - start
    left = max(0, min(col - width // 2, len(line) - width))
    shown = line[left:left + width]
    prefix = "…" if left else ""
    suffix = "…" if left + width < len(line) else ""
    # the caret goes under the column as a terminal shows it: wide (CJK) characters take 2
    under = len(prefix) + _columns(line[left:col])
    return f"  {prefix}{shown}{suffix}\n  {' ' * under}^"


def _columns(s):
    if s.isascii():
        return len(s)
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in s)
