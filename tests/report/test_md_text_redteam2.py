"""Red team of 2026-12-04 (second pass): ``md_text`` still leaves GFM autolinks live.

Rendered with GitHub's own renderer (cmark-gfm, probes/p8_md_text_gfm.py with the cmarkgfm wheel):

* e-mail autolinks: ``a@b.co``, ``user+tag@evil.io``, ``mailto:a@b.co``, ``xmpp:a@b.co/r`` all render as
  ``<a href="mailto:...">``. cmark-gfm finds extended e-mail autolinks in a post-pass over the *text* of the
  paragraph, after backslash escapes and entities were resolved, so ``a\\@b.co`` (what md_text writes), and
  also ``a&#64;b.co``, are links again;
* ``_www.evil.x``: md_text's ``\\bwww`` does not match after ``_`` (a word character), but GFM starts a www
  autolink after ``_`` (as after ``*``, ``~``, ``(`` or a space): ``\\_www.evil.x`` renders
  ``_<a href="http://www.evil.x">``.

These tests state GFM's recognition rules (spec 0.29, "Autolinks (extension)") on md_text's output, so they
need no renderer. RED TEAM: they FAIL on the code of commit 3fe6d59 (the lead fixes md_text and keeps them).
"""
from __future__ import annotations

import html
import re

import pytest

from ssgd.report import md_text

# GFM: an extended e-mail autolink is recognised in a text node: [A-Za-z0-9._+-]+ @ [A-Za-z0-9_-]+ with at least
# one '.', the last character not '-' or '_'
_EMAIL = re.compile(r"[A-Za-z0-9._+\-]+@[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _text_node(markdown: str) -> str:
    """What cmark-gfm's autolink post-pass sees: backslash escapes and entities resolved."""
    return html.unescape(_ESCAPE.sub(r"\1", markdown))


@pytest.mark.parametrize("text", ["a@b.co", "user+tag@evil.io", "mailto:a@b.co", "xmpp:a@b.co/r", "a.b@c.de",
                                  "see foo@bar.baz."])
def test_md_text_leaves_no_email_autolink(text):
    out = md_text(text)
    assert not _EMAIL.search(_text_node(out)), out


@pytest.mark.parametrize("text", ["_www.evil.x", "*www.evil.x", "~www.evil.x", "x _www.evil.x"])
def test_md_text_leaves_no_www_autolink_after_a_delimiter(text):
    out = md_text(text)
    assert "www." not in out.lower(), out
