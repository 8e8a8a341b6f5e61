"""`pii`: personal data and secrets, found and then redacted, dropped or kept, per type.

Types (names are a contract: manifests count `filter.pii.<type>`, the card and the
validation suite name them): email, phone, ip_address, iban, credit_card, us_ssn,
url_credentials, secret.

Finding is two passes. RE2 (Arrow's C++ `match_substring_regex`) marks the rows that
could hold each type, with loose patterns that accept a superset of what the exact
detectors accept; only those rows go through the exact Python detectors, which check
what a pattern cannot: `phonenumbers` validity, public addresses (`ipaddress`), the IBAN
checksum and country format (`python-stdnum`), Luhn and card-issuer prefixes, SSN area
rules, detect-secrets' token formats and entropy limits. The validation suite calls
`find_types` / `types_found`, which run these same detectors, so what the step leaves
and what validation looks for cannot disagree.

Books and documentation are full of numbers that look like personal data. A number right
after ISBN, DOI, "part no" and the like is not a phone, card or SSN; a dotted number after
version, section, chapter, page and the like is not an IP address; a bare run of digits
(2147483647) is not a national phone number; dates, Luhn or checksum failures, never-issued
SSNs and private or documentation address ranges are rejected by the detectors themselves.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import stdnum
from pydantic import Field, field_validator
from stdnum import iban as stdnum_iban

from corpusmill.tasks.filters.step import FilterStep, StepContext, Verdict

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "ip_address": "<IP_ADDRESS>",
    "iban": "<IBAN>",
    "credit_card": "<CREDIT_CARD>",
    "us_ssn": "<US_SSN>",
    "url_credentials": "<URL_CREDENTIALS>",
    "secret": "<SECRET>",
}
TYPES: tuple[str, ...] = tuple(PLACEHOLDERS)
# Where two types claim overlapping text, the first here wins (a card number is not also a phone).
PRIORITY: tuple[str, ...] = ("secret", "url_credentials", "email", "iban", "credit_card", "us_ssn", "ip_address",
                             "phone")

PiiType = Literal["email", "phone", "ip_address", "iban", "credit_card", "us_ssn", "url_credentials", "secret"]
Action = Literal["redact", "drop", "keep"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str


# --- context guards ---------------------------------------------------------------------

# A number right after one of these words is an identifier, not personal data: "ISBN 0-14-143951-3",
# "HP part no 33471-90901".
_IDENTIFIER_WORDS = ("isbn|issn|ismn|doi|arxiv|pmid|pmcid|oclc|lccn|ean|upc|gtin|asin|patent|"
                     r"(?:part|model|serial|catalog|catalogue|cat|item|ref)\.?\s*(?:no|nr|number|#)")
# Dotted numbers after these are versions or numbering: "version 1.2.3.4", "section 4.1.2.3".
_NUMBERING_WORDS = ("version|ver|v|release|build|rev|revision|section|sec|chapter|ch|figure|fig|table|page|pages|p|pp|"
                    "line|lines|vol|volume|verse|art|article|step|rule|clause")
_CONTEXT_CHARS = 24


def _word_before(words: str) -> re.Pattern:
    return re.compile(rf"(?:\b(?:{words})(?:-?1[03])?[\s.:#]*|§\s*)\Z", re.ASCII | re.IGNORECASE)


_AFTER_IDENTIFIER = _word_before(_IDENTIFIER_WORDS)
_AFTER_NUMBERING = _word_before(f"{_IDENTIFIER_WORDS}|{_NUMBERING_WORDS}")


def _preceded_by(context: re.Pattern, text: str, start: int) -> bool:
    return context.search(text, max(0, start - _CONTEXT_CHARS), start) is not None


# --- detectors: each yields (start, end) of the text to redact ----------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    # not a git remote or ssh target with a path or port: git@github.com:org/repo.git, user@host:22
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9]|:[A-Za-z0-9~/._-])",
    re.ASCII,
)


def _emails(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        yield m.span()


# An optional +CC and (area code), then digit groups joined by single separators.
# The lookahead is only for speed: Python's engine then skips to the next +, ( or digit.
_PHONE = re.compile(
    r"(?=[+(0-9])(?<![\w+/.,-])(?P<prefix>\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,5}\)[ .-]?)?|\([0-9]{1,5}\)[ .-]?)?"
    r"(?P<body>[0-9]++(?:[ .-][0-9]++){0,7}+)",
    re.ASCII,
)
_NUMBER_ENDS = re.compile(r"(?![\w/]|[.,-][0-9])", re.ASCII)  # not "12th", "3/4" or "1.5"
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_DATE = re.compile(r"[0-9]{1,4}([./-])[0-9]{1,2}\1[0-9]{1,4}", re.ASCII)
_NON_DIGIT = re.compile(r"[^0-9]", re.ASCII)
PHONE_DIGITS = (7, 15)  # E.164 allows at most 15 digits; fewer than 7 is never a full number
NANP_GROUPS = {(3, 3, 4), (1, 3, 3, 4)}


def _phones(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _PHONE.finditer(text):
        # most matches are a year or a count: too short to hold a phone's digits, whatever follows
        if m.end() - m.start() < PHONE_DIGITS[0] or _preceded_by(_AFTER_IDENTIFIER, text, m.start()):
            continue
        prefix = m["prefix"] or ""
        groups = [g.span() for g in _DIGITS.finditer(text, m.start("body"), m.end("body"))]
        for first, last in _phone_runs(text, groups, mixed=bool(prefix)):
            # an unrelated number may sit right before or after a phone ("1950 - 53 01 23 45 67 45",
            # "0123 2 times", "0123 12th"): also try without the first group, and shortened from the right
            begins = [first] if prefix else range(first, min(first + 2, last))
            for begin, end in ((b, e) for b in begins for e in range(last, b, -1)):
                start, stop = (m.start() if prefix else groups[begin][0]), groups[end - 1][1]
                candidate = text[start:stop]
                if not _NUMBER_ENDS.match(text, stop) or (not prefix and _DATE.fullmatch(candidate)):
                    continue
                if _valid_phone(candidate, prefix.startswith("+"), step.phone_regions):
                    yield start, stop
                    break


def _phone_runs(text: str, groups: list[tuple[int, int]], mixed: bool) -> list[tuple[int, int]]:
    """(first, last + 1) group index of each stretch a phone may span. After +CC or (area) any
    separators mix ("+55 11 96123-4315"); otherwise a number keeps one separator, so
    "on 2019 212-555-0123" splits into "2019 212" and "212-555-0123"."""
    if mixed or len(groups) == 1:
        return [(0, len(groups))]
    seps = [text[end] for _, end in groups[:-1]]
    runs, first = [], 0
    for k in range(1, len(seps)):
        if seps[k] != seps[k - 1]:
            runs.append((first, k + 1))
            first = k
    runs.append((first, len(groups)))
    return runs


def _valid_phone(candidate: str, international: bool, regions: Sequence[str]) -> bool:
    digits = _NON_DIGIT.sub("", candidate)
    if not PHONE_DIGITS[0] <= len(digits) <= PHONE_DIGITS[1]:
        return False
    if international:
        return _parses_valid(candidate, None)
    if digits == candidate:
        return False  # a bare run of digits in text is a number (2147483647), unless written +CC...
    for region in regions:
        prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
        if prefix == "1":  # North America: 212-555-0123, (212) 555-0123, 1 212 555 0123
            if tuple(len(g) for g in _DIGITS.findall(candidate)) not in NANP_GROUPS:
                continue
        elif prefix and not digits.startswith(prefix):
            continue  # elsewhere national forms carry their trunk prefix: 030 ..., 020 ...
        if _parses_valid(candidate, region):
            return True
    return False


def _parses_valid(candidate: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))
    except phonenumbers.NumberParseException:
        return False


_IPV4 = re.compile(r"(?<![\w.:-])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w-]|\.[0-9])", re.ASCII)
_IPV6 = re.compile(r"(?<![\w:.-])[0-9A-Fa-f:]{2,39}+(?![\w:-]|\.\w)", re.ASCII)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_IPV6_DOCUMENTATION = ipaddress.ip_network("3fff::/20")  # RFC 9637, newer than some ipaddress tables


def _ip_addresses(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text):
        if _public(m.group()) and not _preceded_by(_AFTER_NUMBERING, text, m.start()):
            yield m.span()
    for m in _IPV6.finditer(text):
        if m.group().count(":") >= 2 and _public(m.group()):
            yield m.span()


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and (ip not in _GLOBAL_UNICAST or ip in _IPV6_DOCUMENTATION):
        return False  # "a::b" in code is a valid address but no one's
    return ip.is_global and not ip.is_multicast


# Compact, or printed in groups of four; a trailing uppercase word may be caught, and is trimmed.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}+| [A-Z0-9]{4}(?: [A-Z0-9]{4}){1,6}(?: [A-Z0-9]{1,3})?)"
    r"(?![A-Za-z0-9])",
    re.ASCII,
)
IBAN_MIN_LENGTH = 15  # Norway's, the shortest


def _ibans(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        candidate = m.group()
        while len(candidate.replace(" ", "")) >= IBAN_MIN_LENGTH:
            if stdnum_iban.is_valid(candidate):
                yield m.start(), m.start() + len(candidate)
                break
            candidate = candidate.rpartition(" ")[0]


_CARD = re.compile(
    r"(?<![\w.,+/-])(?:[0-9]{13,19}|[0-9]{4}(?P<sep>[ -])[0-9]{3,6}(?:(?P=sep)[0-9]{1,6}){1,5}+)(?![\w/]|[.,-][0-9])",
    re.ASCII,
)
CARD_DIGITS = (13, 19)
# Issuer prefixes (low, high, lengths): Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
_ISSUERS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("4", "4", (13, 16, 19)),
    ("51", "55", (16,)), ("2221", "2720", (16,)),
    ("34", "34", (15,)), ("37", "37", (15,)),
    ("6011", "6011", (16, 19)), ("644", "649", (16, 19)), ("65", "65", (16, 19)),
    ("3528", "3589", (16, 17, 18, 19)),
    ("300", "305", (14, 16, 19)), ("36", "36", (14, 16, 19)), ("38", "39", (16, 19)),
    ("62", "62", (16, 17, 18, 19)),
    ("50", "50", tuple(range(13, 20))), ("56", "58", tuple(range(13, 20))), ("6304", "6304", tuple(range(13, 20))),
    ("6759", "6759", tuple(range(13, 20))), ("676", "676", tuple(range(13, 20))),
)


def _credit_cards(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        if _preceded_by(_AFTER_IDENTIFIER, text, m.start()):
            continue
        # a card number followed by an unrelated number: shorten from the right
        for group in reversed(list(_DIGITS.finditer(text, *m.span()))):
            digits = _NON_DIGIT.sub("", text[m.start() : group.end()])
            if len(digits) < CARD_DIGITS[0]:
                break
            if len(digits) <= CARD_DIGITS[1] and _luhn(digits) and _known_issuer(digits):
                yield m.start(), group.end()
                break


def _luhn(digits: str) -> bool:
    total = 0
    for k, d in enumerate(reversed(digits)):
        v = int(d) * (2 if k % 2 else 1)
        total += v - 9 if v > 9 else v
    return total % 10 == 0


def _known_issuer(digits: str) -> bool:
    return any(low <= digits[: len(low)] <= high and len(digits) in lengths for low, high, lengths in _ISSUERS)


_SSN = re.compile(r"(?<![\w-])(?P<area>[0-9]{3})-(?P<group>[0-9]{2})-(?P<serial>[0-9]{4})(?![\w]|-[0-9])", re.ASCII)


def _us_ssns(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text):
        # never issued: area 000, 666 or 9xx, group 00, serial 0000
        if m["area"] in ("000", "666") or m["area"][0] == "9" or m["group"] == "00" or m["serial"] == "0000":
            continue
        if not _preceded_by(_AFTER_IDENTIFIER, text, m.start()):
            yield m.span()


# scheme://user:password@host: only user:password is personal.
_URL_CREDENTIALS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<cred>[^\s:@/?#]+:[^\s:@/?#]+)@", re.ASCII)


def _url_credentials(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _URL_CREDENTIALS.finditer(text):
        yield m.span("cred")


# Token formats after detect-secrets' plugins (aws, github_token, slack, private_key, jwt,
# keyword and high_entropy_strings), with their entropy limits.
_TOKENS = re.compile(
    r"-{4,5} ?BEGIN (?P<kind>[A-Z0-9 ]*?)PRIVATE KEY(?P<block>(?: BLOCK)?)-{4,5}"  # a PEM / OpenSSH / PGP key
    r"[\s\S]{0,20000}?(?:-{4,5} ?END (?P=kind)PRIVATE KEY(?P=block)-{4,5}|(?=\n[ \t]*\n)|\Z)"
    r"|PuTTY-User-Key-File-[0-9]+:[\s\S]{0,20000}?(?:Private-MAC: [0-9a-fA-F]+|(?=\n[ \t]*\n)|\Z)"
    r"|(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"  # AWS access key id
    r"|(?<![A-Za-z0-9_])(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}|github_pat_[A-Za-z0-9_]{82})(?![A-Za-z0-9_])"
    r"|(?i:xox[aboprs]-(?:[0-9]+-)+[a-z0-9]+)"  # Slack tokens and webhooks
    r"|(?i:https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+)"
    r"|(?P<jwt>(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?+)",
    re.ASCII,
)
# detect-secrets wants the 40 characters quoted; `.env` files and shells write them bare
_AWS_SECRET = re.compile(
    r"aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?"
    r"(?<![0-9a-zA-Z/+])(?P<value>[0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+=])",
    re.ASCII | re.IGNORECASE,
)
# A secret-sounding key assigned a value: `api_key = "..."`, `"password": "..."`, `TOKEN=...`.
_SECRET_KEYS = (r"api_?key|auth_?key|service_?key|account_?key|db_?key|database_?key|priv_?key|private_?key|"
                r"client_?key|db_?pass|database_?pass|key_?pass|password|passwd|pwd|secret|token|contrase(?:ñ|n)a")
_ASSIGNS = r"[A-Za-z0-9_]*['\"\]]{0,2}[ \t]*(?::=|[:=]{1,3}|!==?|=>)[ \t]*"
_ASSIGNMENT = re.compile(
    rf"(?:{_SECRET_KEYS}){_ASSIGNS}(?P<quote>['\"`]?)(?P<value>[A-Za-z0-9+/=_-]++)(?P=quote)",
    re.ASCII | re.IGNORECASE,
)
_HEX = frozenset("0123456789abcdefABCDEF")


def _secret_tokens(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _TOKENS.finditer(text):
        if m["jwt"] is None or _formally_valid_jwt(m["jwt"]):
            yield m.span()


def _aws_secret_keys(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _AWS_SECRET.finditer(text):
        yield m.span("value")


def _assigned_secrets(text: str, step: PersonalData) -> Iterator[tuple[int, int]]:
    for m in _ASSIGNMENT.finditer(text):
        value = m["value"]
        if len(value) >= step.secret_min_length and _high_entropy(value, step):
            yield m.span("value")


def _formally_valid_jwt(token: str) -> bool:
    """detect-secrets' check: header and payload are base64url JSON."""
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and isinstance(payload, dict)


def _high_entropy(value: str, step: PersonalData) -> bool:
    n = len(value)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    if set(value) <= _HEX:
        # detect-secrets: all-digit strings are mostly not secrets, less so the longer they are
        hex_entropy = entropy - (1.2 / math.log2(n) if value.isdigit() else 0)
        if hex_entropy > step.secret_hex_entropy:
            return True
    return entropy > step.secret_base64_entropy


@dataclass(frozen=True)
class Detector:
    type: str
    # An RE2 pattern that matches every row `find` could find something in (and more): rows
    # it does not match are never scanned, so it must stay looser than `find`.
    prefilter: str
    find: Callable[[str, PersonalData], Iterator[tuple[int, int]]]


_DIGIT_RUN = r"[0-9](?:[ .()-]{0,2}[0-9]){6}"  # 7 digits in a phone
DETECTORS: tuple[Detector, ...] = (
    Detector("email", r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9.-]*[A-Za-z]{2}", _emails),
    Detector("phone", _DIGIT_RUN, _phones),
    Detector("ip_address", r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|[23][0-9A-Fa-f]{3}:[0-9A-Fa-f]{0,4}:", _ip_addresses),
    Detector("iban", r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11}| [A-Z0-9]{4} [A-Z0-9]{4})", _ibans),
    Detector("credit_card", r"[0-9]{13}|[0-9]{4}[ -][0-9]{3,6}[ -][0-9]", _credit_cards),
    Detector("us_ssn", r"[0-9]{3}-[0-9]{2}-[0-9]{4}", _us_ssns),
    Detector("url_credentials", r"://[^\s:@/?#]+:[^\s:@/?#]+@", _url_credentials),
    Detector("secret", r"-{4,5} ?BEGIN [A-Z0-9 ]*PRIVATE KEY|PuTTY-User-Key-File-|A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA|"
                       r"gh[opusr]_|github_pat_|(?i:xox[aboprs]-|hooks\.slack\.com/)|eyJ[A-Za-z0-9_-]+\.",
             _secret_tokens),
    Detector("secret", r"(?i:aws).{0,50}[0-9a-zA-Z/+]{40}", _aws_secret_keys),
    # secret_min_length is at least 8
    Detector("secret", rf"(?i:(?:{_SECRET_KEYS}){_ASSIGNS}['\"`]?[A-Za-z0-9+/=_-]{{8}})", _assigned_secrets),
)
_ANY = "|".join(f"(?:{d.prefilter})" for d in DETECTORS)


# --- finding over a batch -----------------------------------------------------------------


def scan(texts: pa.Array | pa.ChunkedArray | Sequence[str | None], step: PersonalData | None = None,
         ) -> dict[int, tuple[str, list[Span]]]:
    """Row index -> (its text, the spans found in it, by start) for rows with any; rows in order."""
    step = step or DEFAULT
    array = _string_array(texts)
    candidates = np.flatnonzero(_matches(array, _ANY))
    if not len(candidates):
        return {}
    subset = array.take(pa.array(candidates))
    text_of: dict[int, str] = {}
    found: dict[int, list[Span]] = {}
    for detector in DETECTORS:
        for k in np.flatnonzero(_matches(subset, detector.prefilter)):
            text = text_of.setdefault(k, subset[int(k)].as_py())
            spans = [Span(s, e, detector.type) for s, e in detector.find(text, step)]
            if spans:
                found.setdefault(k, []).extend(spans)
    return {int(candidates[k]): (text_of[k], _without_overlaps(found[k])) for k in sorted(found)}


def _string_array(texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return texts if isinstance(texts, pa.Array) else pa.array(texts, pa.string())


def _matches(array: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(array, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def _without_overlaps(spans: list[Span]) -> list[Span]:
    """Keep the higher-priority type where spans overlap; the rest in order of start."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (PRIORITY.index(s.type), s.start, s.end)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def types_found(texts: pa.Array | pa.ChunkedArray | Sequence[str | None], step: PersonalData | None = None,
                ) -> list[list[str]]:
    """For each text, the types the step's detectors find in it (in TYPES order)."""
    found = scan(texts, step)
    out: list[list[str]] = [[] for _ in range(len(texts))]
    for i, (_, spans) in found.items():
        present = {s.type for s in spans}
        out[i] = [t for t in TYPES if t in present]
    return out


def find_types(text: str, step: PersonalData | None = None) -> list[str]:
    """The types found in one text; prefer `types_found` for many texts (one RE2 pass for all)."""
    return types_found([text], step)[0]


def redact(text: str, spans: Sequence[Span]) -> str:
    """`text` with each span (sorted, not overlapping) replaced by its type's placeholder."""
    out, end = [], 0
    for span in spans:
        out += [text[end : span.start], PLACEHOLDERS[span.type]]
        end = span.end
    out.append(text[end:])
    return "".join(out)


# --- the step -----------------------------------------------------------------------------


class PersonalData(FilterStep):
    """Finds personal data and secrets; redacts, drops or keeps each type as the recipe says.

    A dropped row's rule is the first type (in TYPES order) whose action is drop; the figures
    count, per type, the matches found, the rows holding any, and the matches redacted, kept,
    or dropped with their row (found == redacted + kept + dropped).
    """

    NAME = "pii"
    VERSION = "2"  # 2: scp-style remotes (git@github.com:org/repo.git) are not e-mail addresses
    action: Action = Field("redact", description="What to do with every type not named in `actions`: "
                                                 "redact (replace each match by its placeholder), drop the row, "
                                                 "or keep it unchanged (still counted).")
    actions: dict[PiiType, Action] = Field(default_factory=dict,
                                           description="Per-type overrides of `action`, e.g. {phone: drop}.")
    phone_regions: tuple[str, ...] = Field(
        ("US", "GB", "DE", "FR", "AU"),
        description="Regions whose national phone formats are recognised (US covers all of North America). "
                    "Numbers written with +country code are recognised for every region. Written without it, "
                    "a number must carry the region's trunk prefix (0 in GB, DE, FR, AU) to count.")
    secret_min_length: int = Field(16, ge=8, description="Shortest value of a `key = value` assignment that may be "
                                                         "a secret.")
    secret_base64_entropy: float = Field(
        4.5, ge=0, le=8, description="Shannon entropy (bits per character) above which an assigned value is a secret "
                                     "(detect-secrets' Base64HighEntropyString limit).")
    secret_hex_entropy: float = Field(3.0, ge=0, le=8, description="The same for hexadecimal values "
                                                                   "(detect-secrets' HexHighEntropyString limit).")

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166 two-letter codes in capitals, "
                             f"such as US, GB, DE, IN")
        return regions

    def action_for(self, kind: str) -> Action:
        return self.actions.get(kind, self.action)

    def identity(self) -> dict:
        # what counts as a valid phone number or IBAN comes with these libraries' data
        return {**super().identity(), "phonenumbers": phonenumbers.__version__, "python-stdnum": stdnum.__version__}

    def filter(self, table: pa.Table, context: StepContext) -> Verdict:
        texts = table.column("text").combine_chunks()
        n = len(texts)
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        figures = {t: {"found": 0, "rows": 0, "redacted": 0, "kept": 0, "dropped": 0} for t in TYPES}
        rewritten: dict[int, str] = {}
        for i, (text, spans) in scan(texts, self).items():
            counts = Counter(s.type for s in spans)
            for kind, c in counts.items():
                figures[kind]["found"] += c
                figures[kind]["rows"] += 1
            dropping = [t for t in TYPES if counts[t] and self.action_for(t) == "drop"]
            if dropping:
                reasons[i] = dropping[0]
                details[i] = "found " + ", ".join(f"{t} ({counts[t]})" for t in TYPES if counts[t])
                for kind, c in counts.items():
                    figures[kind]["dropped"] += c
                continue
            for kind, c in counts.items():
                figures[kind]["redacted" if self.action_for(kind) == "redact" else "kept"] += c
            to_redact = [s for s in spans if self.action_for(s.type) == "redact"]
            if to_redact:
                rewritten[i] = redact(text, to_redact)
        new_text = None
        if rewritten:
            mask = np.zeros(n, dtype=bool)
            mask[list(rewritten)] = True
            new_text = pc.replace_with_mask(texts, pa.array(mask), pa.array(list(rewritten.values()), texts.type))
        return Verdict(reasons, details, text=new_text, figures=figures)


DEFAULT = PersonalData(step="pii")
