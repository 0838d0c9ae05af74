"""The errors gradcli reports: each is bad input, exits 2 and prints one clear message.

A message is what a user reads on one screen: a word longer than :data:`WORD_LIMIT`
characters (a 1 MB unknown name) is shown by its ends, a message longer than
:data:`MESSAGE_LIMIT` is cut, and control characters are escaped, so an error can never
flood a terminal or smuggle escape sequences into it.
"""
import re

__all__ = ["GradcliError", "SourceError", "ParseError", "EvalError", "BindingError",
           "did_you_mean", "close_match", "Suggestions", "clip", "name_list", "position", "caret"]

#: The exit codes an error may carry: 2 (bad input), and 1 only for a check's mismatch.
EXIT_CODES = (1, 2)
WORD_LIMIT = 160
MESSAGE_LIMIT = 4000


class GradcliError(Exception):
    """Bad input of any kind: the message is what the user sees (after ``error: ``).

    ``exit_code`` is 2; a subclass (an ops file's own error class, say) that sets anything but
    1 or 2 gets 2, so no error can ever exit 0 or look like a crash.
    """

    _exit_code = 2
    _code_getter = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "exit_code" in cls.__dict__:  # a subclass's own exit code: checked when read
            code = cls.__dict__["exit_code"]
            delattr(cls, "exit_code")
            if hasattr(code, "__get__"):
                cls._code_getter = code
            else:
                cls._exit_code = code

    @property
    def exit_code(self):
        code = self.__dict__.get("_exit_code", type(self)._exit_code)
        getter = type(self)._code_getter
        if getter is not None and "_exit_code" not in self.__dict__:
            try:
                code = getter.__get__(self, type(self))
            except Exception:
                code = 2
        return _valid_code(code)

    @exit_code.setter
    def exit_code(self, code):
        self.__dict__["_exit_code"] = _valid_code(code)

    def __str__(self):
        return tidy(super().__str__())


def _valid_code(code):
    return code if type(code) is int and code in EXIT_CODES else 2


class SourceError(GradcliError):
    """An error about a place in the program: shown with line, column and a caret."""

    def __init__(self, message, text="", pos=None):
        self.reason = message
        self.text = text
        self.pos = pos
        self.line, self.column = position(text, pos) if pos is not None else (None, None)
        super().__init__(self._render())

    def __str__(self):
        return self.args[0] if self.args else ""  # tidied as it was made

    def _render(self):
        reason = tidy(self.reason)
        if self.pos is None:
            return reason
        return f"line {self.line}, column {self.column}: {reason}\n{caret(self.text, self.pos)}"


class ParseError(SourceError):
    """The program text is not in the language (or names something that does not exist)."""


class EvalError(SourceError):
    """An op cannot run on the values it got: shapes that do not fit, an index out of range."""


class BindingError(GradcliError):
    """A NAME=VALUE binding, a values file or an --upstream value is wrong or missing."""


# ---------------------------------------------------------------- short, printable text

_LONG_WORD = re.compile(r"\S{%d,}" % (WORD_LIMIT + 1))
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clip(text, limit=WORD_LIMIT):
    """``text`` shown by its ends when longer than ``limit``: ``abcdefgh…xyz (1048576 chars)``."""
    text = str(text)
    if len(text) <= limit:
        return text
    head = max(1, limit - 30)
    return f"{text[:head]}…{text[-8:]} ({len(text):,} characters)"


def tidy(message):
    """A message fit for a terminal: long words clipped, control characters escaped, cut."""
    message = str(message)
    if len(message) > WORD_LIMIT:
        message = _LONG_WORD.sub(lambda m: clip(m.group()), message)
    if _CONTROL.search(message):
        message = _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
    if len(message) > MESSAGE_LIMIT:
        cut = message.rfind(" ", 0, MESSAGE_LIMIT)
        cut = cut if cut > MESSAGE_LIMIT // 2 else MESSAGE_LIMIT
        message = f"{message[:cut]} … ({len(message) - cut:,} more characters)"
    return message


def name_list(names, limit=12):
    """``a, b, c, … (997 more)``: names for a message, at most ``limit`` of them, clipped."""
    names = list(names)
    shown = ", ".join(clip(n, 40) for n in names[:limit])
    return shown + (f", … ({len(names) - limit:,} more)" if len(names) > limit else "")


# ---------------------------------------------------------------- did you mean

#: Up to this many candidates are all compared with a name; past it, the name's neighbours
#: in sorted order (this many on each side, forwards and backwards).
_POOL_LIMIT = 400
_NEIGHBOURS = 40


class Suggestions:
    """Candidates sorted once (forwards and backwards), so that each :meth:`match` compares
    ``name`` with at most a few hundred of them however many there are: its neighbours in
    sorted order share its longest prefixes, those of the reversed strings its longest
    suffixes, which is where the close matches are.  A program of 100,000 names gets its
    suggestions in a fraction of a second."""

    def __init__(self, candidates):
        cands = sorted({c for c in candidates if c.__class__ is str and c})
        self.all = cands if len(cands) <= _POOL_LIMIT else None
        self.forwards = cands
        self.backwards = sorted(c[::-1] for c in cands) if self.all is None else None

    def match(self, name, cutoff=0.6):
        """The candidate most like ``name`` (difflib's ratio >= ``cutoff``), else None."""
        import bisect
        import difflib  # only on error paths

        if not isinstance(name, str) or not name or len(name) > 100:
            return None
        if self.all is not None:
            pool = self.all
        else:
            k = _NEIGHBOURS
            i = bisect.bisect_left(self.forwards, name)
            pool = set(self.forwards[max(0, i - k):i + k])
            j = bisect.bisect_left(self.backwards, name[::-1])
            pool.update(c[::-1] for c in self.backwards[max(0, j - k):j + k])
        n = len(name)
        # ratio = 2*M/(la+lb) <= 2*min(la,lb)/(la+lb): lengths outside this window cannot match
        lo, hi = n * cutoff / (2 - cutoff), n * (2 - cutoff) / cutoff
        pool = sorted(c for c in pool if lo <= len(c) <= hi and c != name)
        best = difflib.get_close_matches(name, pool, n=1, cutoff=cutoff)
        return best[0] if best else None


def close_match(name, candidates, cutoff=0.6):
    """The candidate most like ``name`` (difflib's ratio >= ``cutoff``), else None.

    Linear in the number of candidates: at most a few hundred of them, of lengths that can
    reach the cutoff, are compared, and a very long name gets no suggestion.
    """
    if not isinstance(name, str) or not name or len(name) > 100:
        return None
    return Suggestions(candidates).match(name, cutoff)


def did_you_mean(name, candidates):
    """``; did you mean tanh?`` when a candidate is close to ``name``, else nothing."""
    close = close_match(name, candidates)
    return f"; did you mean {close}?" if close else ""


# ---------------------------------------------------------------- where in the program

def position(text, pos):
    """1-based (line, column) of character offset ``pos`` in ``text``."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def caret(text, pos, width=76):
    """The line holding ``pos`` and a caret under it, cut to ``width`` around the caret."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start:end if end >= 0 else len(text)].rstrip("\r")
    col = pos - start
    left = max(0, min(col - width // 2, len(line) - width))
    # only the window is shown: tabs and control characters in it become one space each
    shown = _CONTROL.sub(" ", line[left:left + width].replace("\t", " "))
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
