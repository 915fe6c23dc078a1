"""Redis keys are built in bot/keys.py only: no other module formats one from the prefix, so
the list of keys with their owners and lifetimes there is the whole list."""

from __future__ import annotations

import re
from pathlib import Path

from bot.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
#: an f-string that starts a key with the prefix or extends another key: f"{prefix}:...",
#: f"{self._prefix}:...", f"{self._key(call)}:claimed"
KEY_FSTRING = re.compile(r"""f["'][^"'\n]*\{[^}\n]*(?:prefix|_key\()[^}\n]*\}:""")


def test_no_module_but_bot_keys_formats_a_key() -> None:
    offenders = []
    for package in ("bot", "adapters", "actions", "knowledge"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "bot" / "keys.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if KEY_FSTRING.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_a_hand_built_key() -> None:
    assert KEY_FSTRING.search('        return f"{self._prefix}:mem:{conversation_key}"')
    assert KEY_FSTRING.search('claim = f"{self._key(call)}:claimed"')
    assert not KEY_FSTRING.search('log.info(f"{count}: done")')


def test_every_key_is_under_the_prefix_and_distinct() -> None:
    keys = Keys("sb")
    built = [keys.inbox(), keys.dead_letters(), keys.seen("m"), keys.attempts(),
             keys.conversation_fifo("c"), keys.conversation_lock("c"), keys.ready(),
             keys.answer("m"), keys.answered("m"), keys.memory("c"), keys.memory_once("m"),
             keys.rate("b"), keys.llm_cache("d"), keys.draft("m"), keys.reply_wait("m"),
             keys.reply_handoff("m"), keys.reply_result("m"), keys.reply_taken("m"),
             keys.reply_abandoned("m"), keys.action_call("x"), keys.action_claim("x"),
             keys.sent_pieces("m"), keys.slack_thread("C", "1.2"), keys.discord_thread("D"),
             keys.telegram_offset("7")]
    assert all(k.startswith("sb:") for k in built)
    assert len(set(built)) == len(built)
    documented = (Path(ROOT / "bot" / "keys.py").read_text(encoding="utf-8")
                  .split('"""')[1])
    for key in built:  # each key's name (its second part) is in the module's list
        assert f"<p>:{key.split(':')[1]}" in documented, key
