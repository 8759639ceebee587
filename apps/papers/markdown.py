"""Paper Markdown -> safe HTML: Markdown through the nh3 sanitiser, maths shown as written.

TeX is cut out before Markdown runs (so ``a_1 * b_2`` never turns into emphasis) and put back
after sanitising: in text inside ``<span class="math">``, escaped; in an attribute (a link's
title or address) as the plain TeX, which the sanitiser escapes as it writes the attribute.
Images never load: rendered text must fetch nothing the reader did not ask for, so a Markdown
image becomes a link to click and an HTML ``<img>`` is dropped.
"""

from __future__ import annotations

import html
import re
import secrets
import xml.etree.ElementTree as ET

import markdown as md
import nh3
from markdown.treeprocessors import Treeprocessor

# $$...$$, \[...\], \(...\), then $...$ (not across blank lines, not "$5 and $6" style prices).
_MATH = re.compile(
    r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<![\\$\w])\$(?!\s)(?:[^$\n]|\n(?!\n))+?(?<!\s)\$(?!\w)",
    re.DOTALL,
)
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "th", "thead", "tr", "ul",
}
_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "span": {"class"}}
_URL_SCHEMES = {"http", "https", "mailto"}


class _ImagesAsLinks(Treeprocessor):
    """``![alt](url)`` becomes ``<a href="url">[image: alt]</a>``: loaded only when clicked."""

    def run(self, root: ET.Element) -> None:
        for image in root.iter("img"):
            alt, title = image.get("alt", ""), image.get("title")
            image.attrib = {"href": image.get("src", ""), **({"title": title} if title else {})}
            image.tag = "a"
            image.text = f"[image: {alt}]" if alt else "[image]"


def render_markdown(text: str, *, raw_html: bool = True) -> str:
    """Sanitised HTML for untrusted Markdown (paper text, addenda, agent messages).

    ``raw_html=False`` shows HTML in the text as the characters it is (agent output that writes
    HTML means it as text).
    """
    pieces: list[str] = []
    # A fresh nonce per call: text that spells out a token cannot reach another's maths.
    token = f"KLONGMATH{secrets.token_hex(8)}N"
    tokens = re.compile(re.escape(token) + r"(\d+)X")

    def stash(match: re.Match[str]) -> str:
        pieces.append(match.group(0))
        return f"{token}{len(pieces) - 1}X"

    def tex(match: re.Match[str]) -> str:
        return pieces[int(match.group(1))]

    def attribute(element: str, name: str, value: str) -> str:
        # nh3 checked an address's scheme with the token in it; the TeX put back starts with $ or \,
        # which no scheme contains, so the check still holds.
        return tokens.sub(tex, value)

    protected = _MATH.sub(stash, text or "")
    converter = md.Markdown(extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
    converter.treeprocessors.register(_ImagesAsLinks(converter), "images_as_links", 15)
    if not raw_html:
        converter.preprocessors.deregister("html_block")
        converter.inlinePatterns.deregister("html")
    rendered = converter.convert(protected)
    clean = nh3.clean(rendered, tags=_TAGS, attributes=_ATTRIBUTES, attribute_filter=attribute,
                      url_schemes=_URL_SCHEMES, link_rel="noopener noreferrer nofollow")
    # What is left of the tokens is text: the TeX goes back escaped, so nothing in it is read as HTML.
    return tokens.sub(lambda m: f'<span class="math">{html.escape(tex(m))}</span>', clean)
