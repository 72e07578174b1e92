"""Probe 8: ssgd.report.md_text against GitHub's own renderer (cmark-gfm via the cmarkgfm wheel, installed
into /tmp/rt_pkgs only for this probe): does any escaped text still render a link, an image or HTML?"""
import sys

sys.path.insert(0, "/tmp/rt_pkgs")
import cmarkgfm  # noqa: E402
from cmarkgfm.cmark import Options  # noqa: E402

from ssgd.report import md_text  # noqa: E402

CASES = ["see http://evil.x now", "HTTP://EVIL.X", "www.evil.x", "WWW.evil.x", "a@b.co", "mailto:a@b.co",
         "xmpp:a@b.co/r", "https://evil.x/a_b", "[x](http://e.x)", "<http://e.x>", "<a href=x>y</a>",
         "&lt;b&gt;", "&#60;b&#62;", "![i](http://e.x/p.png)", "ftp://evil.x", "javascript:alert(1)",
         "http\\://e.x", "Www.evil.x", "http:/\\/evil.x", "x www.evil.x", "(www.evil.x)", "_www.evil.x",
         "a.b@c.de", "user+tag@evil.io", "[x]: http://e.x", "foo@bar.baz.", "https:/" + "/e.x",
         "\uff48ttp://e.x", "http\u200b://e.x", "1. item", "# head", "| a | b |", "$x$", "x\u2028y"]
bad = 0
for c in CASES:
    html = cmarkgfm.github_flavored_markdown_to_html(md_text(c), options=Options.CMARK_OPT_UNSAFE)
    live = any(t in html for t in ("<a ", "<img", "<b>", "<h1", "<ol", "<table"))
    bad += live
    print(("LIVE " if live else "ok   ") + repr(c), "->", html.strip()[:120])
print(bad, "live")
