"""Phone-number patterns as DFAs over digits, run on a whole block of numbers with numpy.

phonenumbers decides validity by matching a national number against regular expressions
(a region's general pattern, its number types, its leading digits). Whether a digit
string matches a pattern from start to end, or has a prefix that matches, is a question
about the pattern's language alone, so a DFA answers it exactly, whatever order Python's
engine would try the alternatives in. Each pattern is compiled once (``sre_parse`` ->
Thompson NFA -> subset construction) into rows of one shared transition table; a block's
numbers are a matrix of digits, and one table lookup per digit position moves every row
to its next state at once.

Symbols are the digits 0-9 and ``PAD`` (10), which fills each row after its number. Two
states are shared: ``DEAD`` and ``ACCEPT`` (absorbing). For a whole-string match an
accepting state goes to ``ACCEPT`` on ``PAD``; for a prefix match every accepting state
is ``ACCEPT``. A pattern outside what is compiled here (anchors, look-arounds, back
references, letters only) raises :class:`Unsupported`; its numbers are left to
phonenumbers.
"""

from __future__ import annotations

import re._constants as sre_constants
import re._parser as sre_parse
from collections import deque
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["ACCEPT", "DEAD", "PAD", "DfaTable", "Unsupported"]

PAD = 10
SYMBOLS = 11
DEAD, ACCEPT = 0, 1
_ALL_DIGITS = (1 << 10) - 1
_MAX_STATES = 50_000  # per pattern: far above what phone metadata needs (checked)


class Unsupported(ValueError):
    """A pattern this module does not compile (its numbers go to phonenumbers)."""


class _Nfa:
    """A Thompson NFA: epsilon edges and digit-set edges (a 10-bit mask) per state."""

    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def sequence(self, items: list[Any], start: int) -> int:
        for op, arg in items:
            start = self._node(op, arg, start)
        return start

    def _node(self, op: Any, arg: Any, start: int) -> int:
        if op is sre_constants.LITERAL or op is sre_constants.IN or op is sre_constants.ANY:
            end = self.state()
            mask = _mask(op, arg)
            if mask:
                self.edges[start].append((mask, end))
            return end
        if op is sre_constants.SUBPATTERN:
            return self.sequence(list(arg[3]), start)
        if op is sre_constants.BRANCH:
            end = self.state()
            for branch in arg[1]:
                first = self.state()
                self.eps[start].append(first)
                self.eps[self.sequence(list(branch), first)].append(end)
            return end
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, body = arg[0], arg[1], list(arg[2])
            for _ in range(low):
                start = self.sequence(body, start)
            if high is sre_constants.MAXREPEAT:
                loop = self.state()
                self.eps[start].append(loop)
                self.eps[self.sequence(body, loop)].append(loop)
                return loop
            end = self.state()
            for _ in range(high - low):
                self.eps[start].append(end)
                start = self.sequence(body, start)
            self.eps[start].append(end)
            return end
        raise Unsupported(f"pattern element {op}")


def _mask(op: Any, arg: Any) -> int:
    """The digits one character element matches, as a 10-bit mask."""
    if op is sre_constants.ANY:
        return _ALL_DIGITS
    if op is sre_constants.LITERAL:
        return 1 << (arg - 48) if 48 <= arg <= 57 else 0
    mask, negate = 0, False
    for kind, value in arg:
        if kind is sre_constants.NEGATE:
            negate = True
        elif kind is sre_constants.LITERAL:
            mask |= 1 << (value - 48) if 48 <= value <= 57 else 0
        elif kind is sre_constants.RANGE:
            for code in range(max(value[0], 48), min(value[1], 57) + 1):
                mask |= 1 << (code - 48)
        elif kind is sre_constants.CATEGORY and value is sre_constants.CATEGORY_DIGIT:
            mask = _ALL_DIGITS
        elif kind is sre_constants.CATEGORY and value is sre_constants.CATEGORY_NOT_DIGIT:
            pass  # no digit
        else:
            raise Unsupported(f"character class element {kind}")
    return mask ^ _ALL_DIGITS if negate else mask


class _Closures:
    """Epsilon closures, memoised per NFA state: the closure of a set is the union of
    its states' closures. (Walking the epsilon edges again for every DFA state and digit
    made compiling a region's patterns most of a block's mapping time, measured.)"""

    def __init__(self, nfa: _Nfa) -> None:
        self._nfa = nfa
        self._one: dict[int, frozenset[int]] = {}

    def of(self, states: set[int] | frozenset[int]) -> frozenset[int]:
        if len(states) == 1:
            return self._single(next(iter(states)))
        out: set[int] = set()
        for s in states:
            out |= self._single(s)
        return frozenset(out)

    def _single(self, state: int) -> frozenset[int]:
        found = self._one.get(state)
        if found is None:
            eps = self._nfa.eps
            seen, todo = {state}, [state]
            while todo:
                for nxt in eps[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            found = self._one[state] = frozenset(seen)
        return found


@lru_cache(maxsize=1024)
def _compile(pattern: str, *, prefix: bool) -> list[list[int]]:
    """The DFA of ``pattern`` as rows of SYMBOLS next states, numbered from 2 (row 0 is
    the start; targets are offsets into these rows, or DEAD / ACCEPT). Cached for the
    process: a long-lived host's later runs need the same patterns (callers copy the
    rows, never change them)."""
    try:
        parsed = sre_parse.parse(pattern)
    except Exception as exc:  # re.error and the parser's own failures
        raise Unsupported(str(exc)) from None
    nfa = _Nfa()
    start = nfa.state()
    final = nfa.sequence(list(parsed), start)
    closures = _Closures(nfa)
    # Each NFA state's digit edges as (digit, target) pairs, the mask's bits taken once.
    moves = [
        [(d, t) for mask, t in edges for d in range(10) if mask >> d & 1] for edges in nfa.edges
    ]
    ids: dict[frozenset[int], int] = {}
    rows: list[list[int]] = []
    todo: deque[frozenset[int]] = deque()

    def target(states: frozenset[int]) -> int:
        if not states:
            return DEAD
        if prefix and final in states:
            return ACCEPT
        if states not in ids:
            if len(ids) >= _MAX_STATES:
                raise Unsupported("too many DFA states")
            ids[states] = len(ids) + 2
            rows.append([])
            todo.append(states)
        return ids[states]

    first = target(closures.of({start}))
    if first in (DEAD, ACCEPT):
        return [[first] * SYMBOLS]
    while todo:
        states = todo.popleft()
        row = rows[ids[states] - 2]
        moved: list[set[int]] = [set() for _ in range(10)]
        for s in states:
            for digit, t in moves[s]:
                moved[digit].add(t)
        row += [target(closures.of(m)) if m else DEAD for m in moved]
        row.append(ACCEPT if final in states else DEAD)  # PAD: the number ended here
    return rows


class DfaTable:
    """Every compiled pattern's states in one transition table, ``add`` once per pattern."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = [
            np.full((1, SYMBOLS), DEAD, dtype=np.int32),
            np.full((1, SYMBOLS), ACCEPT, dtype=np.int32),
        ]
        self._size = 2
        self._starts: dict[tuple[str, bool], int] = {}
        self._flat: np.ndarray | None = None

    def add(self, pattern: str | None, *, prefix: bool = False) -> int:
        """The start state of ``pattern`` (DEAD for no pattern: nothing matches); raises
        Unsupported. ``prefix``: a match of a prefix is enough (``re.match``), else the
        whole number must match (``re.fullmatch``)."""
        if not pattern:
            return DEAD
        key = (pattern, prefix)
        if key not in self._starts:
            rows = _compile(pattern, prefix=prefix)
            if len(rows) == 1 and rows[0][0] in (DEAD, ACCEPT) and len(set(rows[0])) == 1:
                self._starts[key] = rows[0][0]
            else:
                table = np.asarray(rows, dtype=np.int32)
                base = self._size - 2
                moved = table >= 2
                table[moved] += base
                # Row 0 is the start state: it is numbered self._size like the others.
                self._rows.append(table)
                self._starts[key] = self._size
                self._size += len(rows)
                self._flat = None
        return self._starts[key]

    def run(self, starts: np.ndarray, digits: np.ndarray) -> np.ndarray:
        """Whether each row of ``digits`` (symbols, PAD after the number; one more column
        than the longest number) is accepted from its start state."""
        if self._flat is None:
            # Each next state pre-multiplied by SYMBOLS: a step is then one add and one
            # take, into buffers made once (~15 % faster on a 10,000-row block, measured).
            self._flat = np.concatenate(self._rows).ravel().astype(np.intp) * SYMBOLS
        flat = self._flat
        at = starts.astype(np.intp) * SYMBOLS  # each row's state, as its offset in flat
        step = np.empty_like(at)
        for column in np.ascontiguousarray(digits.T):
            np.add(at, column, out=step)
            np.take(flat, step, out=at, mode="clip")  # every offset is in the table
        return at == ACCEPT * SYMBOLS
