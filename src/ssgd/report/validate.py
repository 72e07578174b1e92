"""Result files are data, not authority: the one place that checks what a file or a node wrote.

Every value read back from a run folder (a checkpoint's history, its arrays, its round) or
received from a node (an error text) is hostile input. The helpers here check such values
field by field and refuse anything else with a one-line :class:`ResultFileError` (never a
traceback), and turn foreign text into something that is safe to print:

* :func:`bounded_text` -- plain text, one line, at most ``limit`` characters (logs, JSON);
* :func:`md_text` -- the same, escaped for Markdown and HTML (``report.md``, README tables);
* :func:`check_history` -- a list of per-round/per-epoch rows against a schema of field kinds;
* :func:`check_arrays` -- named arrays against a reference model: names, shapes, dtypes, finite;
* :func:`check_count` -- an integer in a range (a checkpoint's round or epoch).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np

__all__ = ["ResultFileError", "TEXT_LIMIT", "LIST_LIMIT", "bounded_text", "md_text", "check_count", "check_number",
           "check_history", "check_arrays", "check_finite_state", "HISTORY_KINDS", "NORM_LIMIT"]

#: default bound of one foreign text (an error reason, a name) written to a result file or report
TEXT_LIMIT = 200

#: most entries of one per-node list in a history row (accepted norms, rejection or failure texts of a round)
LIST_LIMIT = 10_000


class ResultFileError(ValueError):
    """A result file (checkpoint, history, results JSON) whose contents are not what this code writes."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~])")
_SCHEME = re.compile(r"(?i)([a-z][a-z0-9+.\-]*):(?=/|(?<=mailto:)|(?<=xmpp:))")
_BLOCK_START = re.compile(r"^(\d{1,9}|)([.)](?<=\d[.)])|[=\-])(?=[\s=\-]|$)")
_WWW = re.compile(r"(?i)(www)\.")  # anywhere: GFM starts a www autolink after a space or one of * _ ~ (


def bounded_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """``value`` as one line of at most ``limit`` characters: control characters, newlines and Unicode
    bidirectional overrides/isolates (which reorder what a reader sees) become a space, and a longer text
    is cut with ``...``. Works on anything (``str()`` first)."""
    if not isinstance(limit, int) or limit < 4:
        raise ValueError(f"Invalid limit={limit!r}; must be an integer >= 4")
    text = _CONTROL.sub(" ", value if isinstance(value, str) else str(value))
    text = _BIDI.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def md_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """:func:`bounded_text`, then escaped for Markdown and HTML: ``<``, ``>``, ``&`` become entities
    and every Markdown punctuation character (links, emphasis, tables, headings) is backslash-escaped,
    so foreign text renders as the literal text it is. Autolinks are neutralised too: ``<...>`` by the
    entities, GFM's bare ``scheme://`` and ``www.`` ones by escaping their ``:`` or ``.`` (``http\\://``:
    rendered as ``http://``, but not a link), and e-mail ones (``a@b.co``, ``mailto:``, ``xmpp:``) by a
    zero-width space before every ``@``: cmark-gfm finds those in the text *after* escapes and entities are
    resolved, so no escape of ``@`` breaks them, but an address needs a name character right before ``@``."""
    text = bounded_text(value, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    # a block marker where the text may start a line: an ordered list (1. or 1)), a bullet, a thematic break or a
    # setext underline (- or =); # + > are escaped already
    text = _BLOCK_START.sub(r"\1\\\2", text, count=1)
    # autolinks: CommonMark's <...> are gone with < and >; GFM's extended ones (a scheme://, www.) are broken by
    # escaping the character they hinge on, an e-mail address (also mailto:/xmpp:) by U+200B before its @ (renders
    # the same, links nothing)
    text = _SCHEME.sub(r"\1\\:", text)
    text = _WWW.sub(lambda m: m.group(1) + "\\.", text)
    return text.replace("@", "&#8203;@")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v)))


def check_number(value: Any, *, what: str, source: Any, low: float | None = None, high: float | None = None,
                 error: type[Exception] = ResultFileError) -> float:
    """``value`` as a finite real number in ``[low, high]`` (a string, a bool, NaN or inf is refused); else
    ``error`` (:class:`ResultFileError` or a subclass) naming ``what`` and ``source`` in one line."""
    if not _is_number(value) or (low is not None and value < low) or (high is not None and value > high):
        rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise error(f"refusing {source}: {what} is {bounded_text(repr(value), 40)}, not a finite number in {rng}; "
                    "it was not written by this run; move it away to start afresh")
    return float(value)


def check_finite_state(state: Any, *, what: str, source: Any, error: type[Exception] = ResultFileError) -> None:
    """Every floating-point tensor of ``state`` (a model's ``state_dict``: name -> tensor) is finite;
    anything else (not a mapping, a non-tensor value, a NaN or inf entry) is a one-line ``error``."""
    if not isinstance(state, Mapping):
        raise error(f"refusing {source}: {what} are a {type(state).__name__}, not a name -> tensor map; "
                    "move it away to start afresh")
    for name, t in state.items():
        if not hasattr(t, "is_floating_point"):
            raise error(f"refusing {source}: {what} hold {bounded_text(repr(name), 40)} as a {type(t).__name__}, "
                        "not a tensor; move it away to start afresh")
        if t.is_floating_point() and not bool(t.isfinite().all()):
            raise error(f"refusing {source}: {what} hold non-finite values (NaN or inf) in "
                        f"{bounded_text(repr(name), 40)}; move it away to start afresh")


def check_count(value: Any, *, what: str, source: Any, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; else :class:`ResultFileError` naming ``what`` and ``source``."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ResultFileError(f"refusing {source}: {what} is {bounded_text(repr(value), 40)}, not an integer in {rng}; "
                              "it was not written by this run; move it away to start afresh")
    return int(value)


#: the largest update norm a result file may record (an accepted unit vector has norm 1; a noisy one under
#: node-local DP about sigma*2*sqrt(d)): a norm above it was not written by a run of this code
NORM_LIMIT = 1e12

#: the field kinds :func:`check_history` knows: ``count`` is an integer >= 0, ``fraction`` a number in [0, 1]
#: (an accuracy), ``nonneg`` one >= 0 (a loss, seconds); ``node-*`` lists hold at most :data:`LIST_LIMIT`
#: ``[node id, value]`` pairs, node ids integers >= 0 (Flower's are unsigned) or None, ``node-norms`` values in
#: [0, :data:`NORM_LIMIT`]
HISTORY_KINDS = ("int", "int?", "count", "count?", "number", "number?", "fraction", "fraction?", "nonneg", "nonneg?",
                 "text", "node-numbers", "node-norms", "node-texts")


def _check_value(kind: str, v: Any, text_limit: int) -> Any:
    """The checked (and, for text, bounded) value, or raise ValueError with a short reason."""
    if kind.endswith("?"):
        if v is None:
            return None
        kind = kind[:-1]
    if kind in ("int", "count"):
        if not _is_int(v) or (kind == "count" and v < 0):
            raise ValueError("not an integer" if kind == "int" else "not an integer >= 0")
        return int(v)
    if kind == "number":
        if not _is_number(v):
            raise ValueError("not a finite number")
        return v if isinstance(v, int) and not isinstance(v, bool) else float(v)
    if kind in ("fraction", "nonneg"):
        if not _is_number(v) or v < 0 or (kind == "fraction" and v > 1):
            raise ValueError("not a finite number in [0, 1]" if kind == "fraction" else "not a finite number >= 0")
        return float(v)
    if kind == "text":
        if not isinstance(v, str):
            raise ValueError("not a string")
        return bounded_text(v, text_limit)
    if kind in ("node-numbers", "node-norms", "node-texts"):
        if not isinstance(v, (list, tuple)):
            raise ValueError("not a list")
        if len(v) > LIST_LIMIT:
            raise ValueError(f"a list of {len(v)} entries, more than {LIST_LIMIT}")
        out = []
        for item in v:
            if (not isinstance(item, (list, tuple)) or len(item) != 2
                    or not (item[0] is None or (_is_int(item[0]) and item[0] >= 0))):
                raise ValueError("not a list of [node id >= 0, value] pairs")
            value = _check_value({"node-numbers": "number", "node-norms": "nonneg"}.get(kind, "text"), item[1],
                                 text_limit)
            if kind == "node-norms" and value > NORM_LIMIT:
                raise ValueError(f"a norm above {NORM_LIMIT:g}")
            out.append([None if item[0] is None else int(item[0]), value])
        return out
    raise ValueError(f"unknown field kind {kind!r}; known: {HISTORY_KINDS}")


def check_history(rows: Any, fields: Mapping[str, str], *, source: Any, required: tuple[str, ...] = (),
                  max_rows: int = 1_000_000, text_limit: int = TEXT_LIMIT) -> list[dict[str, Any]]:
    """A history read back from a file, checked row by row against ``fields`` (name -> kind, one of
    :data:`HISTORY_KINDS`; a kind ending in ``?`` also allows ``None``).

    Every row must be a dict whose keys are all in ``fields`` and include ``required``, each value
    of its kind (numbers finite, texts bounded to ``text_limit``). Anything else -- a NaN, a
    string where a number belongs, an unknown key, too many rows -- is a one-line
    :class:`ResultFileError` naming the row and field. Returns fresh plain rows."""
    for kind in fields.values():
        if kind.rstrip("?") not in {k.rstrip("?") for k in HISTORY_KINDS}:
            raise ValueError(f"unknown field kind {kind!r}; known: {HISTORY_KINDS}")
    if not isinstance(rows, (list, tuple)):
        raise ResultFileError(f"refusing {source}: its history is a {type(rows).__name__}, not a list; "
                              "move it away to start afresh")
    if len(rows) > max_rows:
        raise ResultFileError(f"refusing {source}: its history has {len(rows)} rows, more than {max_rows}; "
                              "move it away to start afresh")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ResultFileError(f"refusing {source}: history row {i} is a {type(row).__name__}, not an object; "
                                  "move it away to start afresh")
        unknown = [k for k in row if k not in fields]
        if unknown:
            raise ResultFileError(f"refusing {source}: history row {i} has unknown field "
                                  f"{bounded_text(repr(unknown[0]), 40)}; move it away to start afresh")
        missing = [k for k in required if k not in row]
        if missing:
            raise ResultFileError(f"refusing {source}: history row {i} lacks {missing[0]!r}; "
                                  "move it away to start afresh")
        clean = {}
        for k, v in row.items():
            try:
                clean[k] = _check_value(fields[k], v, text_limit)
            except ValueError as e:
                raise ResultFileError(f"refusing {source}: history row {i} field {k!r} is "
                                      f"{bounded_text(repr(v), 40)} ({e}); move it away to start afresh") from None
        out.append(clean)
    return out


def check_arrays(arrays: Any, reference: Mapping[str, Any], *, source: Any) -> "OrderedDict[str, np.ndarray]":
    """``arrays`` (``{name: tensor or ndarray}``) as numpy arrays, checked against ``reference``
    (``{name: array}`` of the model the run builds): the same names in the same order, each with
    the reference's shape and dtype, every entry finite. Anything else is a one-line
    :class:`ResultFileError`."""
    if not isinstance(arrays, Mapping):
        raise ResultFileError(f"refusing {source}: its arrays are a {type(arrays).__name__}, not a name -> array map; "
                              "move it away to start afresh")
    names, want = list(arrays), list(reference)
    if names != want:
        missing = [n for n in want if n not in arrays][:2]
        extra = [bounded_text(repr(n), 40) for n in names if n not in reference][:2]
        raise ResultFileError(f"refusing {source}: its arrays do not match the model (missing {missing}, "
                              f"unexpected {extra}, or another order); it belongs to another model")
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for name in want:
        v = arrays[name]
        if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
            try:  # a sparse or bfloat16 tensor has no numpy form: refused like any other mismatch
                v = v.detach().cpu().numpy()
            except (TypeError, RuntimeError) as e:
                raise ResultFileError(f"refusing {source}: array {name!r} is not a dense tensor numpy can read "
                                      f"({bounded_text(e, 80)}); it belongs to another model") from None
        if not isinstance(v, np.ndarray):
            raise ResultFileError(f"refusing {source}: array {name!r} is a {type(v).__name__}, not a tensor; "
                                  "move it away to start afresh")
        ref = np.asarray(reference[name])
        if v.shape != ref.shape or v.dtype != ref.dtype:
            raise ResultFileError(f"refusing {source}: array {name!r} is {v.dtype}{list(v.shape)}, the model's is "
                                  f"{ref.dtype}{list(ref.shape)}; it belongs to another model")
        if not np.isfinite(v).all():
            raise ResultFileError(f"refusing {source}: array {name!r} holds NaN or inf; move it away to start afresh")
        out[name] = np.array(v, copy=True)
    return out
