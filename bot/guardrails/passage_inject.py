"""Where an indirect injection hides in a documentation passage (BIPIA-style placements), for
the passage dataset of `bot.guardrails.passage_data` (a training-time module).

`insert(passage, payload, placement, rng)` puts `payload` into `passage` at one of `PLACEMENTS`:
plain text at the start, at the sentence boundary nearest the middle, or at the end; or a block
between two lines holding it in an HTML comment, a Markdown link title, image alt text, a
comment in a fenced code block, a Markdown table cell or a quoted e-mail. It returns the new
text with the character span of everything inserted and of the payload as written.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

PLACEMENTS = ("start", "middle", "end", "html_comment", "md_link_title", "img_alt",
              "code_comment", "table_cell", "email_quote")
WRAPPERS = PLACEMENTS[3:]


@dataclass(frozen=True)
class Inserted:
    """A passage with an insertion: `span` the block, `inner` the payload as written."""

    text: str
    span: tuple[int, int]
    inner: tuple[int, int]
    payload: str


_ANCHORS = ("the release notes", "the upgrade guide", "this page", "the reference manual",
            "the FAQ", "the installation notes", "the configuration reference")
_LINK_SENTENCES = ("See [{a}]({u} \"", "For details, read [{a}]({u} \"",
                   "More in [{a}]({u} \"")
_URLS = ("https://docs.example.org/{w}.html", "https://example.com/wiki/{w}",
         "../{w}/index.html", "https://internal.example.net/kb/{w}")
_IMAGES = ("images/{w}-diagram.png", "_static/{w}.svg", "figures/fig-{w}.png")
_CODE = (("bash", "#", "./configure --prefix=/opt/{w} && make install"),
         ("sql", "--", "SELECT id, name FROM {w} WHERE active ORDER BY id;"),
         ("python", "#", "settings = load_settings(\"{w}.toml\")"),
         ("javascript", "//", "const {w} = await client.connect(options);"),
         ("yaml", "#", "{w}:\n  enabled: true"))
_NAMES = ("Dana Whitfield", "Priya Raman", "Tomasz Nowak", "Lena Fischer", "Marcus Hale")
_SUBJECTS = ("Re: upgrade plan", "Re: question about {w}", "Fwd: deployment notes",
             "Re: {w} settings")
_DAYS = ("Mon, 3 Mar 2025 at 09:14", "Tue, 11 Jun 2024 at 16:02", "Fri, 20 Sep 2024 at 11:47")
_DESCRIPTIONS = ("Enables the feature.", "Seconds to wait before giving up.",
                 "Where log files are written.", "Maximum number of retries.")
_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:[_-][a-z0-9]+)+\b|\b[a-z]{5,12}\b")


def _words(passage: str, rng: random.Random, k: int) -> list[str]:
    """k identifier-like words of the passage (or generic ones), for wrappers."""
    found = sorted(set(_WORD.findall(passage))) or ["config", "server", "backup"]
    return [rng.choice(found) for _ in range(k)]


def _element(kind: str, payload: str, passage: str, rng: random.Random) -> tuple[str, int, str]:
    """(block, offset of the payload in it, payload as written) for a wrapper kind."""
    w1, w2 = _words(passage, rng, 2)
    if kind == "html_comment":
        p = payload.replace("-->", "->")
        return f"<!-- {p} -->", 5, p
    if kind == "md_link_title":
        p = payload.replace('"', "'")
        pre = rng.choice(_LINK_SENTENCES).format(a=rng.choice(_ANCHORS),
                                                 u=rng.choice(_URLS).format(w=w1))
        return f'{pre}{p}").', len(pre), p
    if kind == "img_alt":
        p = payload.replace("[", "(").replace("]", ")")
        return f"![{p}]({rng.choice(_IMAGES).format(w=w1)})", 2, p
    if kind == "code_comment":
        lang, mark, code = rng.choice(_CODE)
        p = payload.replace("```", "'''")
        code = code.format(w=w1)
        if rng.random() < 0.5:
            return f"```{lang}\n{mark} {p}\n{code}\n```", len(lang) + len(mark) + 5, p
        head = f"```{lang}\n{code}\n{mark} "
        return f"{head}{p}\n```", len(head), p
    if kind == "table_cell":
        p = payload.replace("|", "/")
        head = "| Setting | Default | Description |\n|---|---|---|\n"
        rows = [f"| `{w}` | `{rng.choice(('on', 'off', '30', 'none'))}` | " for w in (w1, w2)]
        at = rng.randrange(2)
        before = head + "".join(r + rng.choice(_DESCRIPTIONS) + " |\n" for r in rows[:at])
        before += rows[at]
        after = " |" + "".join("\n" + r + rng.choice(_DESCRIPTIONS) + " |"
                               for r in rows[at + 1:])
        return before + p + after, len(before), p
    if kind == "email_quote":
        name = rng.choice(_NAMES)
        if rng.random() < 0.5:
            user = name.split()[0].lower()
            subject = rng.choice(_SUBJECTS).format(w=w1)
            head = f"From: {name} <{user}@example.com>\nSubject: {subject}\n\n> "
        else:
            head = f"On {rng.choice(_DAYS)}, {name} wrote:\n> "
        return head + payload, len(head), payload
    raise ValueError(f"unknown placement {kind!r}")


def insert(passage: str, payload: str, placement: str, rng: random.Random) -> Inserted:
    """`passage` with `payload` (whitespace collapsed) inserted at `placement`."""
    payload = " ".join(payload.split())
    if placement in ("start", "end"):
        sep = rng.choice((" ", "\n\n"))
        if placement == "start":
            return Inserted(payload + sep + passage, (0, len(payload)), (0, len(payload)),
                            payload)
        at = len(passage) + len(sep)
        return Inserted(passage + sep + payload, (at, at + len(payload)),
                        (at, at + len(payload)), payload)
    if placement == "middle":
        # the sentence (or line) boundary nearest the centre, else the nearest space
        for pattern in (r"(?<=[.!?:])\s+|\n+", r"\s+"):
            cuts = [m for m in re.finditer(pattern, passage) if 0 < m.start() < len(passage) - 1]
            if cuts:
                best = min(cuts, key=lambda m: abs(m.end() - len(passage) / 2))
                at = best.end()
                text = passage[:at] + payload + best.group(0) + passage[at:]
                return Inserted(text, (at, at + len(payload)), (at, at + len(payload)), payload)
        return insert(passage, payload, "end", rng)
    block, offset, written = _element(placement, payload, passage, rng)
    lines = sorted({0, len(passage), *(m.end() for m in re.finditer(r"\n", passage))})
    at = rng.choice(lines)
    left, right = passage[:at].rstrip(), passage[at:].lstrip()
    start = len(left) + (2 if left else 0)
    text = left + ("\n\n" if left else "") + block + ("\n\n" if right else "") + right
    return Inserted(text, (start, start + len(block)),
                    (start + offset, start + offset + len(written)), written)
