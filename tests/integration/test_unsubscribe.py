"""One-click unsubscribe (RFC 8058): the link in every message, POST /u/{token} that suppresses, the page a GET
shows, forged links, and links that outlive a restart and a key rotation.

The service runs in this process (API, scheduler, a Dramatiq worker) and sends to the aiosmtpd sink; the
links are taken from the messages the sink received wherever the test is about what was sent.
"""

from __future__ import annotations

import threading
from html.parser import HTMLParser
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from coldmail.api.unsubscribe import links_key
from coldmail.db import database, unsubscribes
from coldmail.unsubscribe.tokens import TokenSigner
from tests.support import payloads
from tests.support.db import event_kinds, sql
from tests.support.metrics import parse
from tests.support.waiting import async_wait_for

BASE = "https://unsubscribe.example.com"
FAR = "2099-01-01T00:00:00Z"
ONE_CLICK = {"data": "List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


async def schedule(client, auth, **fields) -> int:
    resp = await client.post("/emails", json=payloads.email(**fields), headers=auth)
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["jobId"])


def path_of(link: str) -> str:
    """The link's path on the test server: links are built on PUBLIC_BASE_URL, the server listens elsewhere."""
    assert link.startswith(BASE + "/u/"), link
    return urlsplit(link).path


def suppressions() -> list[tuple]:
    return sql("SELECT account, address, reason, email_id FROM suppressions ORDER BY address")


async def unsubscribes_total(client) -> float:
    return parse(await (await client.get("/metrics")).text())("coldmail_unsubscribes_total")


async def test_every_message_carries_a_one_click_link_that_suppresses_once_unless_scheduled_without(
        make_service, sink, auth):
    service = await make_service(PUBLIC_BASE_URL=BASE + "/")
    client = service.client
    before = await unsubscribes_total(client)
    # Given an email with the link in its HTML, a transactional one, and a later one to the same recipient
    html = '<p>Hello</p><p><a href="{{unsubscribe_url}}">Unsubscribe</a> or visit {{unsubscribe_url}}</p>'
    marketing = await schedule(client, auth, subject="marketing", body=html)
    transactional = await schedule(client, auth, subject="receipt", body="Your receipt. {{unsubscribe_url}}",
                                   unsubscribe=False)
    later = await schedule(client, auth, subject="later", scheduledAt=FAR)
    await async_wait_for(lambda: len(sink.arrivals) == 2, timeout_s=15, what="two messages")
    by_subject = {a.message["Subject"]: a.message for a in sink.arrivals}

    # Then the first carries both RFC 8058 headers, and the same link in its HTML and its text part
    message = by_subject["marketing"]
    header = message["List-Unsubscribe"].strip()  # folded before the link when the line would pass 78
    assert header.startswith("<") and header.endswith(">")
    link = header[1:-1]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part = message.get_body(("html",)).get_content()
    assert html_part.count(link) == 2 and "{{unsubscribe_url}}" not in html_part
    assert link in message.get_body(("plain",)).get_content()
    # And the transactional one carries neither header, and its body is as written
    receipt = by_subject["receipt"]
    assert receipt["List-Unsubscribe"] is None and receipt["List-Unsubscribe-Post"] is None
    assert "{{unsubscribe_url}}" in receipt.get_content()
    # And each email shows its flag
    flags = {i: (await (await client.get(f"/emails/{i}", headers=auth)).json())["unsubscribe"]
             for i in (marketing, transactional)}
    assert flags == {marketing: True, transactional: False}

    # When the recipient's provider posts the one-click form to the link, without any key
    resp = await client.post(path_of(link), **ONE_CLICK)
    # Then it is 200, and the address is suppressed for the account, naming the email
    assert resp.status == 200 and (await resp.json()) == {"status": "unsubscribed"}
    assert suppressions() == [("default", "user@example.com", "unsubscribed", marketing)]
    # And the recipient's PENDING email is stopped, the email has its event, the counter one more
    assert sql("SELECT status FROM emails WHERE id = %s", later) == [("SUPPRESSED",)]
    assert event_kinds(marketing).count("unsubscribed") == 1
    assert await unsubscribes_total(client) == before + 1

    # When it is posted again, with an empty body this time
    resp = await client.post(path_of(link))
    # Then it is 200 again and nothing more happened
    assert resp.status == 200
    assert suppressions() == [("default", "user@example.com", "unsubscribed", marketing)]
    assert event_kinds(marketing).count("unsubscribed") == 1
    assert await unsubscribes_total(client) == before + 1


class Page(HTMLParser):
    """What the test needs of a page: the root's lang, the title, the headings, the forms and their buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.lang = None
        self.title = ""
        self.headings: list[str] = []
        self.forms: list[dict] = []
        self.scripts = 0
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        elif tag == "form":
            self.forms.append({"method": attrs.get("method"), "action": attrs.get("action"), "buttons": []})
        elif tag == "button" and "form" in self._in:
            self.forms[-1]["buttons"].append({"type": attrs.get("type", "submit"), "text": ""})
        elif tag == "script":
            self.scripts += 1
        self._in.append(tag)

    def handle_endtag(self, tag):
        while self._in and self._in.pop() != tag:
            pass

    def handle_data(self, data):
        if self._in and self._in[-1] == "title":
            self.title += data
        elif self._in and self._in[-1] == "h1":
            self.headings.append(data.strip())
        elif self._in and self._in[-1] == "button" and self.forms and self.forms[-1]["buttons"]:
            self.forms[-1]["buttons"][-1]["text"] += data.strip()


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


async def test_the_page_a_get_shows_posts_to_the_link_and_a_get_alone_changes_nothing(make_service, auth):
    service = await make_service(PUBLIC_BASE_URL=BASE)
    client = service.client
    email_id = await schedule(client, auth, scheduledAt=FAR)
    link = client.app[links_key].url("default", email_id)

    # When a browser (or a link scanner) fetches the link, twice, and asks for its head
    for _ in range(2):
        resp = await client.get(path_of(link), headers={"Accept": "text/html"})
        assert resp.status == 200
    assert (await client.head(path_of(link))).status == 200
    # Then it is a plain HTML page: a language, a title, a heading that says what happens, no script
    assert resp.content_type == "text/html" and resp.charset == "utf-8"
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Referrer-Policy"] == "no-referrer"
    page = parsed(await resp.text())
    assert page.lang == "en" and "unsubscribe" in page.title.lower()
    assert len(page.headings) == 1 and "unsubscribe" in page.headings[0].lower()
    assert page.scripts == 0
    # And its one form posts to the very link, with a submit button that says what it does
    [form] = page.forms
    assert form["method"].lower() == "post" and form["action"] == link
    assert [b["type"] for b in form["buttons"]] == ["submit"] and form["buttons"][0]["text"] == "Unsubscribe"
    # And nothing was unsubscribed
    assert suppressions() == []
    assert sql("SELECT status FROM emails WHERE id = %s", email_id) == [("PENDING",)]
    assert "unsubscribed" not in event_kinds(email_id)

    # When the button is pressed (the browser posts the form's button, and asks for HTML)
    resp = await client.post(path_of(form["action"]), data="List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"})
    # Then the answer is a page that says so, and the address is suppressed
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "unsubscribed" in parsed(await resp.text()).headings[0].lower()
    assert suppressions() == [("default", "user@example.com", "unsubscribed", email_id)]
    assert sql("SELECT status FROM emails WHERE id = %s", email_id) == [("SUPPRESSED",)]


def altered(token: str, at: int) -> str:
    replacement = "A" if token[at] != "A" else "B"
    return token[:at] + replacement + token[at + 1:]


async def test_forged_and_altered_links_are_404_and_change_nothing(make_service, auth):
    service = await make_service(PUBLIC_BASE_URL=BASE)
    client = service.client
    email_id = await schedule(client, auth, scheduledAt=FAR)
    links = client.app[links_key]
    token = links.url("default", email_id).rpartition("/")[2]
    forger = TokenSigner([b"not the service's key, 32 bytes."])
    forged = [
        forger.sign("default", email_id),                      # signed with another key
        altered(token, 0), altered(token, len(token) // 2),    # a character of the MAC, of the id
        altered(token, len(token) - 1),                        # the last one (also its spare bits)
        token[:-1], token[:-4], token + "A", token + "=",      # cut short, lengthened, padded
        token[:5] + "+" + token[6:],                            # base64's other alphabet
        links.url("default", email_id + 1000).rpartition("/")[2],  # ours, but no such email
        links.url("other", email_id).rpartition("/")[2],           # ours, but another account's id
        "x", "A" * 200,
    ]
    for bad in forged:
        assert bad != token
        # Then a POST is the API's JSON 404, a GET a small HTML page with 404
        resp = await client.post(f"/u/{bad}", **ONE_CLICK)
        assert resp.status == 404, bad
        assert (await resp.json())["error"] == "not_found"
        resp = await client.get(f"/u/{bad}")
        assert resp.status == 404 and resp.content_type == "text/html", bad
        assert "not valid" in parsed(await resp.text()).headings[0]
    # And nothing was unsubscribed, while the real link still works
    assert suppressions() == []
    assert (await client.post(f"/u/{token}", **ONE_CLICK)).status == 200
    assert len(suppressions()) == 1


async def test_a_link_stays_valid_after_a_restart_with_the_stored_key(make_service, auth):
    # Given a link made by one instance of the service, with no COLDMAIL_SECRET_KEY
    first = await make_service(PUBLIC_BASE_URL=BASE, worker=False)
    email_id = await schedule(first.client, auth, scheduledAt=FAR)
    link = first.client.app[links_key].url("default", email_id)
    await first.client.close()
    assert sql("SELECT count(*) FROM unsubscribe_signing_key") == [(1,)]
    # When a new instance starts on the same database
    second = await make_service(PUBLIC_BASE_URL=BASE, worker=False)
    # Then it makes the same link, and the link unsubscribes
    assert second.client.app[links_key].url("default", email_id) == link
    assert (await second.client.post(path_of(link), **ONE_CLICK)).status == 200
    assert suppressions() == [("default", "user@example.com", "unsubscribed", email_id)]
    assert sql("SELECT count(*) FROM unsubscribe_signing_key") == [(1,)]


async def test_a_link_signed_with_a_key_still_verifies_while_that_key_is_listed(make_service, auth):
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    # Given a link signed under K1
    service = await make_service(PUBLIC_BASE_URL=BASE, worker=False, COLDMAIL_SECRET_KEY=k1)
    email_id = await schedule(service.client, auth, scheduledAt=FAR)
    old_link = service.client.app[links_key].url("default", email_id)
    await service.client.close()
    # When the service restarts with K2 dropped out: K2 alone does not verify it
    service = await make_service(PUBLIC_BASE_URL=BASE, worker=False, COLDMAIL_SECRET_KEY=k2)
    assert (await service.client.get(path_of(old_link))).status == 404
    await service.client.close()
    # When it restarts with "K2,K1": new links are signed with K2, and the old one still unsubscribes
    service = await make_service(PUBLIC_BASE_URL=BASE, worker=False, COLDMAIL_SECRET_KEY=f"{k2},{k1}")
    assert service.client.app[links_key].url("default", email_id) != old_link
    assert (await service.client.get(path_of(old_link))).status == 200
    assert (await service.client.post(path_of(old_link), **ONE_CLICK)).status == 200
    assert suppressions() == [("default", "user@example.com", "unsubscribed", email_id)]


def test_processes_starting_at_once_agree_on_one_stored_key(database_url):
    # Given no stored key
    sql("DELETE FROM unsubscribe_signing_key")
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        with database.connection_context():
            keys.append(unsubscribes.signing_key())

    # When eight connections make one at the same moment
    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every one reads the same key, and one row is stored
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) == 32
    assert sql("SELECT count(*) FROM unsubscribe_signing_key") == [(1,)]
