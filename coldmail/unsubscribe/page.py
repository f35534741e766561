"""The pages a recipient's browser sees at /u/{token}: plain HTML, no script, no style sheet, no outside
resource; readable without CSS and by a screen reader (a language, a title, one heading, a labelled button)."""

from __future__ import annotations

from html import escape

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
</head>
<body>
<main>
<h1>{title}</h1>
{content}
</main>
</body>
</html>
"""


def _page(title: str, content: str) -> str:
    return _PAGE.format(title=escape(title), content=content)


def confirm_page(action: str) -> str:
    """What GET shows: a button that POSTs to `action` (the link itself). A GET alone changes nothing, as link
    scanners and previews fetch every link."""
    return _page("Unsubscribe from these emails", (
        "<p>Press the button to stop receiving these emails at your address.</p>\n"
        f'<form method="post" action="{escape(action, quote=True)}">\n'
        '<button type="submit" name="List-Unsubscribe" value="One-Click">Unsubscribe</button>\n'
        "</form>"))


def done_page() -> str:
    """What a browser's POST answers."""
    return _page("You are unsubscribed", "<p>No more of these emails will be sent to your address.</p>")


def not_found_page() -> str:
    """A link that is not one of ours (mistyped, cut short or forged)."""
    return _page("Link not valid", "<p>This unsubscribe link is not valid. Check that the whole link was "
                                   "copied from the email.</p>")
