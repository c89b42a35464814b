"""Answers as the chat shows them: Markdown rendered and sanitised on the server, and Regenerate adding switchable
alternatives of a turn instead of a second question and answer."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from django_tenants.utils import tenant_context

from agents.models import Message
from agents.rendering import answer_html
from agents.runtime.runner import _newest_alternatives
from agents.services import chat_start
from core.errors import Conflict, NotFound

from .conftest import host_of, run_inline

HANDBOOK = {
    "Refunds": "Refunds are accepted within **30 days** of purchase. Keep the receipt.",
    "Office": "Our office is in Lisbon and opens at nine.",
}

XSS_PAYLOADS = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    '<a href="javascript:window.pwned=3">open</a>',
    "[the manual](javascript:window.pwned=4)",
    "[encoded](jav&#x09;ascript:window.pwned=5)",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<svg onload="window.pwned=6"></svg>',
    '<iframe src="javascript:window.pwned=7"></iframe>',
    "![pixel](https://tracker.example/p.png)",
    '[t](https://ok.example "x\\" onmouseover=\\"window.pwned=8")',
]


# --- rendering and sanitising ---------------------------------------------------------------------------


def test_markdown_renders_bold_lists_code_and_tables():
    html = answer_html(
        "Run **apt-get** first:\n\n* update\n* upgrade\n\n1. one\n2. two\n\n```sh\napt-get install -y x < y\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\nSee `make up` and [the docs](https://example.com/docs)."
    )
    assert "<strong>apt-get</strong>" in html
    assert re.search(r"<ul>\s*<li>update</li>\s*<li>upgrade</li>\s*</ul>", html)
    assert re.search(r"<ol>\s*<li>one</li>", html)
    assert "<pre><code>apt-get install -y x &lt; y\n</code></pre>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert "<code>make up</code>" in html
    assert '<a href="https://example.com/docs" rel="noopener noreferrer nofollow">the docs</a>' in html


def test_hard_wrapped_lines_read_as_one_sentence_but_paragraphs_and_lists_stay():
    html = answer_html("The cooling loop runs at\n42 degrees during normal\noperation.\n\nSecond paragraph.\n- a list")
    assert "<p>The cooling loop runs at 42 degrees during normal operation.</p>" in html
    assert "<p>Second paragraph.</p>" in html
    assert "<li>a list</li>" in html


def _elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element the browser would build from `html`, with its attributes."""
    found: list[tuple[str, dict[str, str | None]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Collect().feed(html)
    return found


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_script_capable_markup_in_an_answer_is_inert(payload):
    html = answer_html(f"Before {payload} after **bold**")
    elements = _elements(html)
    assert ("strong", {}) in elements  # the rest of the answer still renders
    for tag, attrs in elements:
        assert tag in {"p", "strong", "a"}, html  # no img, script, svg, iframe
        assert not [name for name in attrs if name.startswith("on") or name in ("src", "style")], html
        if "href" in attrs:
            assert (attrs["href"] or "").startswith("https://"), html


def test_raw_html_is_shown_as_text_not_dropped():
    # A reader sees what the source said (escaped), so a document quoting HTML loses nothing.
    assert answer_html("Use <b>tags</b>") == "<p>Use &lt;b&gt;tags&lt;/b&gt;</p>\n"


def test_links_into_this_site_and_empty_answers():
    assert 'href="/manage/' not in answer_html("[admin](/manage/members/)")
    assert answer_html("") == ""


# --- regenerate: alternatives of a turn --------------------------------------------------------------------


def _ask(live, agent, *, message="", conversation_id=None, regenerate=None) -> dict:
    with tenant_context(live.tenant_a):
        agent.refresh_from_db()
        handles = chat_start(
            principal=live.principal(),
            agent=agent,
            message=message,
            conversation_id=conversation_id,
            regenerate=regenerate,
        )
    assert run_inline(live.tenant_a, handles["run_id"])["status"] == "complete"
    return handles


def test_regenerate_adds_an_alternative_of_the_turn_not_a_new_question(live):
    agent = live.agent(knowledge_base_ids=[live.knowledge_base(HANDBOOK).pk])
    first = _ask(live, agent, message="Within how many days are refunds accepted?")
    conversation = first["conversation_id"]
    second = _ask(live, agent, conversation_id=conversation, regenerate=first["message_id"])
    # Regenerating from the second alternative still joins the turn's first answer.
    third = _ask(live, agent, conversation_id=conversation, regenerate=second["message_id"])
    with tenant_context(live.tenant_a):
        rows = list(Message.objects.filter(conversation_id=conversation).order_by("created", "id"))
    assert [(m.role, m.alternative_of_id) for m in rows] == [
        ("user", None),
        ("assistant", None),
        ("assistant", first["message_id"]),
        ("assistant", first["message_id"]),
    ]
    assert [m.pk for m in rows[1:]] == [first["message_id"], second["message_id"], third["message_id"]]
    assert "30 days" in rows[2].content  # the same question was answered again

    # The API lists every alternative with its link and the sanitised rendering.
    body = live.client().get(f"/api/v1/conversations/{conversation}/messages/").json()["results"]
    assert [m["alternative_of"] for m in body] == [None, None, first["message_id"], first["message_id"]]
    assert body[0]["content_html"] is None  # questions are shown as typed
    assert "<strong>30 days</strong>" in body[1]["content_html"]
    # The page reads back just the answer a run finished: the messages newer than the one before it.
    url = f"/api/v1/conversations/{conversation}/messages/"
    newer = live.client().get(url, {"after": second["message_id"] - 1}).json()["results"]
    assert [m["id"] for m in newer] == [second["message_id"], third["message_id"]]
    assert live.client().get(url, {"after": "latest"}).status_code == 400

    # The chat page shows one answer with three switchable alternatives.
    page = live.client().get(f"/agents/{agent.pk}/chat/?c={conversation}", HTTP_HOST=host_of(live.tenant_a))
    turns = json.loads(re.search(r'id="chat-history"[^>]*>(.*?)</script>', page.content.decode(), re.S).group(1))
    assert [t["role"] for t in turns] == ["user", "assistant"]
    alternatives = turns[1]["alternatives"]
    assert [a["id"] for a in alternatives] == [first["message_id"], second["message_id"], third["message_id"]]
    assert "<strong>30 days</strong>" in alternatives[0]["html"]


def test_only_the_latest_turn_can_be_regenerated(live):
    agent = live.agent(knowledge_base_ids=[live.knowledge_base(HANDBOOK).pk])
    first = _ask(live, agent, message="Within how many days are refunds accepted?")
    _ask(live, agent, message="Where is the office?", conversation_id=first["conversation_id"])
    with tenant_context(live.tenant_a), pytest.raises(Conflict):
        chat_start(
            principal=live.principal(),
            agent=agent,
            message="",
            conversation_id=first["conversation_id"],
            regenerate=first["message_id"],
        )


def test_regenerate_names_an_answer_of_that_conversation(live):
    agent = live.agent(knowledge_base_ids=[live.knowledge_base(HANDBOOK).pk])
    one = _ask(live, agent, message="Within how many days are refunds accepted?")
    other = _ask(live, agent, message="Where is the office?")
    with tenant_context(live.tenant_a), pytest.raises(NotFound):
        chat_start(
            principal=live.principal(),
            agent=agent,
            message="",
            conversation_id=one["conversation_id"],
            regenerate=other["message_id"],
        )


def test_regenerate_over_http_answers_the_stored_question(live):
    agent = live.agent(knowledge_base_ids=[live.knowledge_base(HANDBOOK).pk])
    first = _ask(live, agent, message="Within how many days are refunds accepted?")
    response = live.client().post(
        f"/api/v1/agents/{agent.pk}/chat/",
        {"message": "", "conversation_id": first["conversation_id"], "regenerate": first["message_id"], "wait": False},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    run_inline(live.tenant_a, response.json()["run_id"])
    with tenant_context(live.tenant_a):
        regenerated = Message.objects.get(pk=response.json()["message_id"])
    assert regenerated.alternative_of_id == first["message_id"] and "30 days" in regenerated.content


def test_later_turns_see_only_the_newest_alternative_as_history():
    newest_first = [
        {"id": 5, "role": "user", "content": "next?", "alternative_of_id": None},
        {"id": 4, "role": "assistant", "content": "third try", "alternative_of_id": 2},
        {"id": 3, "role": "assistant", "content": "second try", "alternative_of_id": 2},
        {"id": 2, "role": "assistant", "content": "first try", "alternative_of_id": None},
        {"id": 1, "role": "user", "content": "question", "alternative_of_id": None},
    ]
    assert [r["id"] for r in _newest_alternatives(newest_first)] == [5, 4, 1]
