"""Paper Markdown -> safe HTML: Markdown through the nh3 sanitiser, maths shown as written.

TeX is cut out before Markdown runs (so ``a_1 * b_2`` never turns into emphasis) and put back
escaped after sanitising, inside ``<span class="math">``: what the author wrote, untouched.
"""

from __future__ import annotations

import html
import re

import markdown as md
import nh3

# $$...$$, \[...\], \(...\), then $...$ (not across blank lines, not "$5 and $6" style prices).
_MATH = re.compile(
    r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<![\\$\w])\$(?!\s)(?:[^$\n]|\n(?!\n))+?(?<!\s)\$(?!\w)",
    re.DOTALL,
)
_TOKEN = "KLONGMATH{}X"
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
}


def render_markdown(text: str, *, raw_html: bool = True, images: bool = True) -> str:
    """Sanitised HTML for untrusted Markdown (paper text, addenda, agent messages).

    ``raw_html=False`` shows HTML in the text as the characters it is (agent output that writes
    HTML means it as text); ``images=False`` drops images, so a message can never make the
    reader's browser fetch a URL of the agent's choosing.
    """
    pieces: list[str] = []

    def stash(match: re.Match[str]) -> str:
        pieces.append(match.group(0))
        return _TOKEN.format(len(pieces) - 1)

    protected = _MATH.sub(stash, text or "")
    converter = md.Markdown(extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
    if not raw_html:
        converter.preprocessors.deregister("html_block")
        converter.inlinePatterns.deregister("html")
    rendered = converter.convert(protected)
    tags = _TAGS if images else _TAGS - {"img"}
    clean = nh3.clean(rendered, tags=tags, attributes={"a": {"href", "title"}, "img": {"src", "alt"},
                                                         "code": {"class"}, "span": {"class"}},
                      url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")
    # Put the TeX back last, escaped, so nothing it contains is ever read as HTML.
    return re.sub(r"KLONGMATH(\d+)X",
                  lambda m: f'<span class="math">{html.escape(pieces[int(m.group(1))])}</span>', clean)
