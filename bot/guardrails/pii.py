"""Detect and redact personal data and secrets in text.

What is found, and how:
- e-mail addresses: the practical subset of RFC 5322 addr-spec (dot-atom local part, domain
  with a TLD of 2+ letters);
- phone numbers: Google's libphonenumber (`phonenumbers`), numbers valid for their region, in
  international form (+...) or national form for the configured regions;
- payment card numbers: 13-19 digits, optionally grouped by spaces or dashes, that pass the
  Luhn check (ISO/IEC 7812-1; `python-stdnum`);
- IBANs: ISO 13616 with the mod-97 check (`python-stdnum`);
- IP addresses: IPv4 and IPv6, validated by the `ipaddress` module;
- API keys and tokens: common formats (OpenAI, Anthropic, Slack, GitHub, GitLab, AWS, Google,
  Stripe, Telegram bot tokens, JWTs, PEM private keys, `Bearer` values) plus high-entropy
  strings: 24+ characters from the base64/hex alphabets, mixing letters and digits, with
  Shannon entropy of at least `entropy_bits` bits per character.

Each finding is replaced by a tag such as `[EMAIL]`; `redact` returns the new text and the kinds
found.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

KINDS = ("email", "phone", "card", "iban", "ip", "secret")

_EMAIL = re.compile(
    # the lookbehind excludes the whole local-part alphabet: a match starts only where a
    # local part can start, so a long run of such characters is scanned once, not quadratically
    r"(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_TELEGRAM_FORMAT = r"\b\d{8,10}:[A-Za-z0-9_-]{35}\b"
_SECRET_FORMATS = re.compile("|".join([
    r"\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}",   # OpenAI, Anthropic
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",                       # Slack tokens
    r"\bxapp-\d-[A-Za-z0-9-]{10,}",                           # Slack app-level tokens
    r"\bgh[pousr]_[A-Za-z0-9]{30,}", r"\bgithub_pat_[A-Za-z0-9_]{30,}",  # GitHub
    r"\bglpat-[A-Za-z0-9_-]{20,}",                            # GitLab
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",                         # AWS access key id
    r"\bAIza[0-9A-Za-z_-]{35}",                               # Google API key
    r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",                # Stripe
    _TELEGRAM_FORMAT,                                         # Telegram bot token
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?<=[Bb]earer )[A-Za-z0-9._~+/-]{16,}=*",
]))
#: A literal every alternative of _SECRET_FORMATS but the Telegram token contains: a text
#: with none of them (most texts) skips that regex, which tries 13 alternatives at every
#: position (about 0.2 ms for 500 characters); without them only the Telegram token can
#: match, and it needs a ":".
_SECRET_MARKERS = ("sk-", "xox", "xapp-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                   "glpat-", "AKIA", "ASIA", "AIza", "k_live_", "k_test_", "eyJ",
                   "PRIVATE KEY-----", "earer ")
_TELEGRAM_TOKEN = re.compile(_TELEGRAM_FORMAT)
_CANDIDATE = re.compile(r"[A-Za-z0-9+/_=-]{24,}")
_DIGIT = re.compile(r"\d")  # any Unicode decimal digit, as libphonenumber reads them
_PLUS_SIGNS = ("+", "\uff0b")  # libphonenumber's PLUS_CHARS
#: a one-digit country code and the shortest national number of any region (4 digits)
_INTERNATIONAL_MIN_DIGITS = 5


def _min_national_digits(region: str) -> int:
    """The fewest digits a number of `region` may be written with: its shortest national
    significant number, local-only forms included (libphonenumber's metadata, general
    description); 1 when the region is unknown (never skips)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    desc = metadata.general_desc if metadata is not None else None
    # local-only lengths too: where the region completes a local number with its area code
    # (the North American plan's 7 digits, MG, NF, SM), fewer digits are a valid number
    lengths = [*(desc.possible_length or ()), *(desc.possible_length_local_only or ())] \
        if desc is not None else []
    return min(lengths) if lengths else 1


def _digit_run(digits: int) -> re.Pattern[str]:
    """`digits` digits with at most four other characters between each two of them (a
    superset of the digits of a phone-number candidate: its punctuation is among them)."""
    return re.compile(r"\d" + (r"(?:\D{0,4}\d)" + f"{{{digits - 1}}}" if digits > 1 else ""))


def _secret_format_matches(text: str) -> list[re.Match[str]]:
    """`_SECRET_FORMATS.finditer(text)`, skipped where no alternative can match."""
    if any(marker in text for marker in _SECRET_MARKERS):
        return list(_SECRET_FORMATS.finditer(text))
    if ":" in text:
        return list(_TELEGRAM_TOKEN.finditer(text))
    return []


def shannon_bits(text: str) -> float:
    """Shannon entropy of the characters of `text`, bits per character."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


class PIIRedactor:
    """Finds and replaces personal data and secrets.

    Args:
        kinds: which of KINDS to look for.
        phone_regions: ISO 3166 regions whose national phone formats are recognized
            (international +... numbers are always recognized).
        entropy_bits: the least Shannon entropy, bits per character, of a generic secret.
    """

    def __init__(self, kinds: Iterable[str] = KINDS, phone_regions: Iterable[str] = ("US",),
                 entropy_bits: float = 4.0) -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {sorted(unknown)}")
        self.phone_regions = [r.upper() for r in phone_regions]
        self.entropy_bits = entropy_bits
        # the fewest digits a valid number of each region can have (its shortest national
        # significant number; a national prefix or country code only adds digits): a text
        # with fewer digits in all is not searched for that region's numbers
        self._phone_min_digits: dict[str | None, int] = {
            None: _INTERNATIONAL_MIN_DIGITS,
            **{r: _min_national_digits(r) for r in self.phone_regions}}
        # libphonenumber's matcher only tries candidates that are digit blocks with at most
        # four punctuation characters between them (phonenumbermatcher.py, PATTERN): a text
        # without that many digits so close together holds no number of the region, and the
        # matcher (about 0.6 ms for 1,500 characters of prose with numbers in it) is skipped
        self._phone_runs = {region: _digit_run(n) for region, n in self._phone_min_digits.items()}

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings, in text order (earlier kinds in KINDS win overlaps,
        secrets first of all)."""
        found: list[Finding] = []
        # each pattern runs only on a text that holds what every match of it needs (an "@",
        # enough digits, dots or colons): same findings, a fraction of the scans
        digits = len(_DIGIT.findall(text))
        if "secret" in self.kinds:
            found += [Finding("secret", m.start(), m.end()) for m in _secret_format_matches(text)]
        if "email" in self.kinds and "@" in text:
            found += [Finding("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
        if "iban" in self.kinds and digits >= 2:
            found += [Finding("iban", m.start(), m.end()) for m in _IBAN.finditer(text)
                      if stdnum_iban.is_valid(m.group())]
        if "card" in self.kinds and digits >= 13:
            found += [Finding("card", m.start(), m.end()) for m in _CARD.finditer(text)
                      if luhn.is_valid(re.sub(r"[ -]", "", m.group()))]
        if "ip" in self.kinds:
            if digits >= 4 and text.count(".") >= 3:
                found += [Finding("ip", m.start(), m.end()) for m in _IPV4.finditer(text)
                          if _is_ip(m.group())]
            if text.count(":") >= 2:
                found += [Finding("ip", m.start(), m.end()) for m in _IPV6.finditer(text)
                          if m.group().count(":") >= 2 and _is_ip(m.group())]
        if "phone" in self.kinds:
            found += self._phones(text, digits)
        if "secret" in self.kinds:
            found += [Finding("secret", m.start(), m.end()) for m in _CANDIDATE.finditer(text)
                      if self._looks_random(m.group())]
        return _non_overlapping(found)

    def _phones(self, text: str, digits: int) -> list[Finding]:
        spans: dict[tuple[int, int], Finding] = {}
        for region in [None, *self.phone_regions]:
            if digits < self._phone_min_digits[region] \
                    or not self._phone_runs[region].search(text):
                continue
            if region is None and not any(plus in text for plus in _PLUS_SIGNS):
                continue  # without a region only +<country code> numbers parse
            for match in phonenumbers.PhoneNumberMatcher(text, region,
                                                         leniency=phonenumbers.Leniency.VALID):
                spans[(match.start, match.end)] = Finding("phone", match.start, match.end)
        return list(spans.values())

    def _looks_random(self, token: str) -> bool:
        letters = any(c.isalpha() for c in token)
        digits = sum(c.isdigit() for c in token)
        return letters and digits >= 2 and shannon_bits(token) >= self.entropy_bits

    def redact(self, text: str) -> tuple[str, list[str]]:
        """`text` with each finding replaced by `[KIND]`, and the kinds found (in order)."""
        findings = self.find(text)
        if not findings:
            return text, []
        parts: list[str] = []
        last = 0
        for f in findings:
            parts.append(text[last:f.start])
            parts.append(f"[{f.kind.upper()}]")
            last = f.end
        parts.append(text[last:])
        return "".join(parts), [f.kind for f in findings]


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _non_overlapping(found: list[Finding]) -> list[Finding]:
    """Keep the first-listed finding where two overlap; return them in text order."""
    kept: list[Finding] = []
    for f in found:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
