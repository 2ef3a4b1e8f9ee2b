"""A static check that a regular expression cannot backtrack super-linearly (tests only).

Python's `re` backtracks. This flags, on the parse tree `re` itself builds, the shapes that make it
quadratic or worse: an unbounded repeat inside another, two unbounded repeats that can take the same
characters with nothing between them that both must leave, and (for a search) a leading part that a
retry at the next position would scan again. Character sets are over-approximated, so a finding may
be a false alarm; it does not look for overlapping alternatives inside a repeat (`(a|a)*`), and it
refuses constructs it does not know (backreferences, conditionals) with an AssertionError.
"""

from __future__ import annotations

import re

try:  # Python 3.11+
    from re import _constants as sre_c
    from re import _parser as sre_p
except ImportError:  # Python 3.10
    import sre_constants as sre_c  # type: ignore[no-redef]
    import sre_parse as sre_p  # type: ignore[no-redef]

_ALPHABET = [chr(i) for i in range(256)] + ["\u2026", "\u2028", "\u3000"]
_CATEGORY = {
    sre_c.CATEGORY_DIGIT: r"\d",
    sre_c.CATEGORY_NOT_DIGIT: r"\D",
    sre_c.CATEGORY_SPACE: r"\s",
    sre_c.CATEGORY_NOT_SPACE: r"\S",
    sre_c.CATEGORY_WORD: r"\w",
    sre_c.CATEGORY_NOT_WORD: r"\W",
}
_ANY_TEXT = frozenset(_ALPHABET)


def _chars(items, flags: int) -> frozenset[str]:
    """Every character the items can consume (a superset is fine: it only adds findings)."""
    out: set[str] = set()
    for op, av in items:
        if op is sre_c.LITERAL:
            c = chr(av)
            out |= {c, c.swapcase()} if flags & re.I else {c}
        elif op is sre_c.NOT_LITERAL:
            out |= _ANY_TEXT - {chr(av)}
        elif op is sre_c.ANY:
            out |= _ANY_TEXT - ({"\n"} if not flags & re.S else set())
        elif op is sre_c.IN:
            members: set[str] = set()
            negate = False
            for sub_op, sub_av in av:
                if sub_op is sre_c.NEGATE:
                    negate = True
                elif sub_op is sre_c.LITERAL:
                    c = chr(sub_av)
                    members |= {c, c.swapcase()} if flags & re.I else {c}
                elif sub_op is sre_c.RANGE:
                    members |= {c for c in _ALPHABET if sub_av[0] <= ord(c) <= sub_av[1]}
                elif sub_op is sre_c.CATEGORY:
                    members |= {c for c in _ALPHABET if re.fullmatch(_CATEGORY[sub_av], c)}
                else:
                    raise AssertionError(f"unhandled class item {sub_op}")
            out |= (_ANY_TEXT - members) if negate else members
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            out |= _chars(av[2], flags)
        elif op is sre_c.SUBPATTERN:
            out |= _chars(av[-1], flags)
        elif op is sre_c.BRANCH:
            for branch in av[1]:
                out |= _chars(branch, flags)
        elif op in (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT):
            pass  # zero-width
        else:
            raise AssertionError(f"unhandled regex item {op}")
    return frozenset(out)


def _unbounded(item) -> bool:
    return item[0] in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT) and item[1][1] == sre_c.MAXREPEAT


def _nullable(item) -> bool:
    op, av = item
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        return av[0] == 0 or all(_nullable(i) for i in av[2])
    if op is sre_c.SUBPATTERN:
        return all(_nullable(i) for i in av[-1])
    if op is sre_c.BRANCH:
        return any(all(_nullable(i) for i in b) for b in av[1])
    if op is sre_c.AT:
        return av not in (sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING)
    return op in (sre_c.ASSERT, sre_c.ASSERT_NOT)


def _flat(items) -> list:
    """The sequence with plain groups inlined (a group that must match is just its items)."""
    out = []
    for item in items:
        if item[0] is sre_c.SUBPATTERN:
            out += _flat(item[1][-1])
        else:
            out.append(item)
    return out


def _edge_repeats(item, last: bool) -> list:
    """Unbounded repeats an optional group or a branch can start (or end) with."""
    op, av = item
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT) and not _unbounded(item):
        bodies = [av[2]]
    elif op is sre_c.BRANCH:
        bodies = av[1]
    else:
        return []
    found = []
    for body in bodies:
        seq = _flat(body)
        for sub in reversed(seq) if last else seq:
            if _unbounded(sub):
                found.append(sub)
            found += _edge_repeats(sub, last)
            if not _nullable(sub):
                break
    return found


def linearity_problems(pattern: re.Pattern, mode: str) -> list[str]:
    """Why `pattern` may backtrack super-linearly when used with `mode` ("search" or "match").

    Flags (1) an unbounded repeat inside another, (2) two unbounded repeats that can take the same
    characters with nothing between them that both cannot skip, and (3) for "search", a leading part
    that a retry at the next position would scan again (the implicit `.*?` of a search).
    """
    flags = pattern.flags
    problems: list[str] = []
    multiline = bool(flags & re.M)

    def separates(item, common: frozenset[str]) -> bool:
        """Every way to match `item` consumes a character outside `common` (`^` under re.M: a newline)."""
        op, av = item
        if op is sre_c.AT:
            if av is sre_c.AT_BEGINNING:
                return "\n" not in common if multiline else True
            return av is sre_c.AT_BEGINNING_STRING
        if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            return False
        if op in (sre_c.LITERAL, sre_c.NOT_LITERAL, sre_c.ANY, sre_c.IN):
            return not (_chars([item], flags) & common)
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            return av[0] > 0 and any(separates(i, common) for i in _flat(av[2]))
        if op is sre_c.SUBPATTERN:
            return any(separates(i, common) for i in _flat(av[-1]))
        if op is sre_c.BRANCH:
            return all(any(separates(i, common) for i in _flat(b)) for b in av[1])
        raise AssertionError(f"unhandled regex item {op}")

    def check(items, prefix: bool) -> None:
        seq = _flat(items)
        if prefix:  # a search retries at every position: as if `(?s:.)*` came first
            seq = [(sre_c.MAX_REPEAT, (0, sre_c.MAXREPEAT, [(sre_c.IN, [(sre_c.NEGATE, None)])])), *seq]
        for i, item in enumerate(seq):
            op, av = item
            if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
                inner = _flat(av[2])
                if _unbounded(item) and any(_unbounded(s) or _edge_repeats(s, False) for s in inner):
                    problems.append("an unbounded repeat inside an unbounded repeat")
                check(av[2], False)
            elif op is sre_c.BRANCH:
                for branch in av[1]:
                    check(branch, False)
            lefts = [item] if _unbounded(item) else _edge_repeats(item, True)
            for left in lefts:
                left_chars = _chars([left], flags)
                for j in range(i + 1, len(seq)):
                    right = seq[j]
                    for r in [right] if _unbounded(right) else _edge_repeats(right, False):
                        common = left_chars & _chars([r], flags)
                        if common and not any(separates(b, common) for b in seq[i + 1 : j]):
                            problems.append(f"adjacent repeats that can take {sorted(common)[:5]}")
                    if separates(right, left_chars):
                        break  # the left repeat cannot run past this item

    check(sre_p.parse(pattern.pattern, flags), mode == "search")
    return problems
