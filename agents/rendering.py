"""Answers as people read them: Markdown rendered to HTML that is safe to put in the page.

An answer is untrusted text twice over: a model wrote it, and the offline provider copies it out of uploaded
documents, which anyone with upload rights controls. So the Markdown parser never passes raw HTML through (it is
shown as text), refuses script-capable link schemes, and its output is then cleaned by nh3 with an allow-list of
tags, attributes and URL schemes: neither layer alone is trusted to be complete.

Single line breaks inside a paragraph are the source's hard wrapping, not the author's intent, so they render as
spaces and a sentence reads as one; blank lines, lists, headings and code blocks keep their structure.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

# Tags Markdown produces (CommonMark, tables, strikethrough), minus images: an answer must not load pictures from
# addresses a document chose (tracking pixels), so `![alt](url)` stays a plain link.
ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}

_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": False})
    .enable(["table", "strikethrough"])
    .disable("image")
)
# A soft break is the source's line wrapping: a space, so the reader never sees a sentence cut in two.
_markdown.add_render_rule("softbreak", lambda *_: " ")

_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes=ALLOWED_ATTRIBUTES,
    url_schemes=URL_SCHEMES,
    link_rel="noopener noreferrer nofollow",
    url_relative="deny",  # an answer has no business pointing into this site's own pages
)


def answer_html(text: str) -> str:
    """The answer's Markdown as sanitised HTML, ready to be inserted into the page as is."""
    if not text:
        return ""
    return _cleaner.clean(_markdown.render(text))
