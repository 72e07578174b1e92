"""ssgd.report.validate: the shared checks of result files and of foreign text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssgd.report import ResultFileError, bounded_text, check_arrays, check_count, check_history, md_text

FIELDS = {"epoch": "int", "acc": "number", "eps": "number?", "note": "text", "norms": "node-numbers"}


def test_md_text_renders_foreign_text_literally_on_one_bounded_line():
    evil = "<script>x</script> [a](http://e) | *b* _c_ `d`\n# head\x00" + "A" * 500
    out = md_text(evil)
    assert len(out) <= 2 * 200 and "\n" not in out and "\x00" not in out
    for raw in ("<script", "[a](", "| *", "`d`"):
        assert raw not in out
    assert out.startswith("&lt;script&gt;x&lt;/script&gt; \\[a\\](http\\://e) \\| \\*b\\*")
    assert bounded_text("a\nb", 10) == "a b" and bounded_text("x" * 50, 10) == "x" * 7 + "..."


# GFM's extended autolinks (https://github.github.com/gfm/#autolinks-extension-): www., scheme://, e-mail
_GFM_AUTOLINK = __import__("re").compile(r"(?i)(?:\bwww\.|\b(?:https?|ftp)://|\b(?:mailto|xmpp):|[\w.+-]@[\w-]+\.)")


def test_md_text_leaves_no_autolink():
    """Red team 19, still open: md_text left bare URLs, which Markdown renderers turn into links."""
    from markdown_it import MarkdownIt

    evil = ("see http://evil.example/x and HTTPS://a.b, ftp://f.g, www.evil.example, <https://auto.link>, "
            "mailto:a@b.c, xmpp:x@y.z, e-mail bob@evil.example")
    out = md_text(evil)
    assert not _GFM_AUTOLINK.search(out), out
    html = MarkdownIt("commonmark").render(out)
    assert "<a " not in html and "&lt;https://auto.link&gt;" in html
    # the escapes render as the literal text: a reader sees the original characters, unlinked (the zero-width
    # space md_text puts before an @ is invisible)
    seen = html.replace("\u200b", "")
    assert "http://evil.example/x" in seen and "www.evil.example" in seen and "bob@evil.example" in seen
    assert md_text("error: no update, ratio 1.5") == "error: no update, ratio 1.5"  # ordinary text is untouched


# what cmark-gfm's e-mail autolink pass sees: the text after backslash escapes and entities are resolved
_EMAIL = __import__("re").compile(r"[A-Za-z0-9._+\-]+@[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+")


def _text_node(markdown: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown))


@pytest.mark.parametrize("text", [
    "a@b.co", "a@@b.co", "x&#64;y.co", "x&commat;y.co", "(a@b.co)", "*a@b.co*", "_a@b.co", "mailto:a@b.co",
    "MAILTO:A@B.CO", "xmpp:a@b.co/r", "a_b@c.de", "_www.e.x", "*www.e.x*", "~www.e.x", "(www.e.x)", "a_WWW.e.x",
    "http://e.x", "hTTpS://e.x", "ftp://e.x", "<http://e.x>", "x www.e.x y@z.co http://e.x"])
def test_md_text_leaves_no_gfm_autolink_after_any_delimiter(text):
    out = md_text(text)
    node = _text_node(out)
    assert not _EMAIL.search(node), out  # an address needs a name character right before its @
    assert "www." not in out.lower() and not __import__("re").search(r"[^\\]://", out), out  # escaped in the source
    assert node.replace("\u200b", "") == __import__("html").unescape(text) or "&" in text, node  # reads the same


@pytest.mark.parametrize("text", ["1. item", "1) item", "- item", "---", "==="])
def test_md_text_cannot_start_a_list_a_rule_or_a_heading_at_the_start_of_a_line(text):
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render("para\n" + md_text(text))
    assert html.startswith("<p>") and html.count("<") == 2, html


def test_md_text_under_githubs_own_renderer_links_nothing():
    """Optional: with GitHub's renderer (the cmarkgfm package) installed, nothing md_text writes renders as a
    link, an image, HTML, a heading, a list or a table."""
    cmarkgfm = pytest.importorskip("cmarkgfm")
    from cmarkgfm.cmark import Options

    cases = ["a@b.co", "mailto:a@b.co", "xmpp:a@b.co/r", "_www.evil.x", "*www.evil.x", "x _www.evil.x",
             "a.b@c.de", "user+tag@evil.io", "foo@bar.baz.", "see http://evil.x now", "HTTP://EVIL.X", "www.evil.x",
             "[x](http://e.x)", "<http://e.x>", "<a href=x>y</a>", "&#60;b&#62;", "![i](http://e.x/p.png)",
             "x&#64;y.co", "1. item", "- item", "# head", "| a | b |", "a_b@c.de", "(www.e.x)"]
    for text in cases:
        html = cmarkgfm.github_flavored_markdown_to_html("para\n\n" + md_text(text),
                                                         options=Options.CMARK_OPT_UNSAFE)
        assert not any(t in html for t in ("<a ", "<img", "<b>", "<h1", "<ol", "<ul", "<table")), (text, html)


def test_check_history_keeps_good_rows_and_refuses_anything_else_in_one_line():
    good = [{"epoch": 1, "acc": 0.5, "eps": None, "note": "ok\nfine", "norms": [[1, 1.0]]}]
    assert check_history(good, FIELDS, source="f.pt", required=("epoch",)) == [
        {"epoch": 1, "acc": 0.5, "eps": None, "note": "ok fine", "norms": [[1, 1.0]]}]
    bad_rows = [
        [{"epoch": 1, "acc": float("nan")}], [{"epoch": 1, "acc": "0.5"}], [{"epoch": "1"}], [{"epoch": True}],
        [{"epoch": 1, "other": 1}], [{"acc": 0.5}], [[1, 2]], {"epoch": 1}, [{"epoch": 1, "norms": [[1, "x"]]}],
        [{"epoch": 1, "eps": float("inf")}],
    ]
    for rows in bad_rows:
        with pytest.raises(ResultFileError) as info:
            check_history(rows, FIELDS, source="f.pt", required=("epoch",))
        assert "\n" not in str(info.value) and "f.pt" in str(info.value), rows


def test_check_arrays_and_check_count():
    ref = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    got = check_arrays({"w": torch.ones(2, 3), "b": torch.ones(2)}, ref, source="c.pt")
    assert list(got) == ["w", "b"] and got["w"].dtype == np.float32
    for arrays in ({"w": torch.ones(2, 3, dtype=torch.float64), "b": torch.ones(2)},
                   {"w": torch.ones(2, 3), "b": torch.tensor([1.0, float("nan")])},
                   {"b": torch.ones(2), "w": torch.ones(2, 3)}, {"w": torch.ones(2, 3)},
                   {"w": torch.ones(3, 2), "b": torch.ones(2)}, {"w": [1, 2], "b": torch.ones(2)}, [1, 2]):
        with pytest.raises(ResultFileError):
            check_arrays(arrays, ref, source="c.pt")
    assert check_count(3, what="round", source="c.pt", low=1, high=5) == 3
    for v in (0, 6, "3", 3.0, True, None):
        with pytest.raises(ResultFileError):
            check_count(v, what="round", source="c.pt", low=1, high=5)


def test_bidi_overrides_are_removed_from_foreign_text():
    from ssgd.report import bounded_text, md_text

    evil = "ok\u202eexe.txt\u2066x\u2069"
    for f in (bounded_text, md_text):
        out = f(evil)
        assert not any(c in out for c in "\u202e\u2066\u2069"), out


@pytest.mark.parametrize("bad", ["bfloat16", "sparse"])
def test_arrays_numpy_cannot_read_are_refused_in_one_line(bad):
    import torch

    from ssgd.report import ResultFileError, check_arrays

    ref = {"w": np.zeros((2, 2), dtype=np.float32)}
    t = torch.zeros(2, 2, dtype=torch.bfloat16) if bad == "bfloat16" else torch.zeros(2, 2).to_sparse()
    with pytest.raises(ResultFileError, match="refusing ckpt: array 'w'"):
        check_arrays({"w": t}, ref, source="ckpt")


def test_number_fraction_and_list_bounds_are_one_line_refusals():
    """Red team 19, still open: an accuracy outside [0, 1], a negative loss or clock, an unbounded per-node list."""
    from ssgd.report import LIST_LIMIT, check_finite_state, check_number

    fields = {"round": "int", "acc": "fraction?", "loss": "nonneg", "texts": "node-texts"}
    ok = [{"round": 1, "acc": 1.0, "loss": 0, "texts": [[1, "a"]] * LIST_LIMIT}]
    assert check_history(ok, fields, source="f")[0]["acc"] == 1.0
    for row in ({"round": 1, "acc": 1.01, "loss": 0}, {"round": 1, "acc": -0.1, "loss": 0},
                {"round": 1, "loss": -1e-9}, {"round": 1, "loss": 0, "texts": [[1, "a"]] * (LIST_LIMIT + 1)}):
        with pytest.raises(ResultFileError, match="refusing f: history row 0") as ei:
            check_history([row], fields, source="f")
        assert "\n" not in str(ei.value)
    assert check_number(3, what="x", source="f", low=0) == 3.0
    for bad in ("12", float("nan"), float("inf"), True, -1.0, None):
        with pytest.raises(ResultFileError, match="refusing f: x is"):
            check_number(bad, what="x", source="f", low=0.0)
    check_finite_state({"w": torch.ones(2), "steps": torch.tensor(3)}, what="w", source="f")
    for bad in ({"w": torch.tensor([1.0, float("nan")])}, {"w": torch.tensor([float("-inf")])}, {"w": 1.0}, [1]):
        with pytest.raises(ResultFileError, match="refusing f"):
            check_finite_state(bad, what="its weights", source="f")
