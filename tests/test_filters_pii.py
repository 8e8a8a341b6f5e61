"""The `pii` filter step: each type found and redacted, dropped or kept; what it must not
take for personal data in books and documentation; the detectors validation reuses."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from corpusmill.tasks.filters import parse_step
from corpusmill.tasks.filters.pii import DEFAULT, DETECTORS, PLACEHOLDERS, PersonalData, find_types, scan
from corpusmill.tasks.filters.step import StepContext

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIy"
       "fQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n" \
      "-----END RSA PRIVATE KEY-----"

# (type, text, the text after redaction)
FOUND = [
    ("email", "Write to jane.doe@example.com today.", "Write to <EMAIL> today."),
    ("email", "user@example.com in the docs is an address too", "<EMAIL> in the docs is an address too"),
    ("email", "Contact: ops@example.org: we answer within a day", "Contact: <EMAIL>: we answer within a day"),
    ("phone", "Call (212) 555-0123 or 212.555.0199.", "Call <PHONE> or <PHONE>."),
    ("phone", "London 020 7946 0958, Berlin 030 1234567.", "London <PHONE>, Berlin <PHONE>."),
    ("phone", "Ring +44 20 7946 0958 or +33612345678 or +55 11 96123-4315.",
     "Ring <PHONE> or <PHONE> or <PHONE>."),
    ("phone", "born 2019 212-555-0123 and call 212 555 0123 2 times", "born 2019 <PHONE> and call <PHONE> 2 times"),
    ("ip_address", "Resolved 8.8.8.8:53 and 2001:4860:4860::8888.", "Resolved <IP_ADDRESS>:53 and <IP_ADDRESS>."),
    ("iban", "Pay DE89 3704 0044 0532 0130 00 EUR or GB82WEST12345698765432 now.",
     "Pay <IBAN> EUR or <IBAN> now."),
    ("credit_card", "Card 4111 1111 1111 1111, Amex 3782-822463-10005, 5555555555554444.",
     "Card <CREDIT_CARD>, Amex <CREDIT_CARD>, <CREDIT_CARD>."),
    ("us_ssn", "SSN 123-45-6789 on file.", "SSN <US_SSN> on file."),
    ("url_credentials", "git clone https://alice:s3cr3t@git.example.org/x.git",
     "git clone https://<URL_CREDENTIALS>@git.example.org/x.git"),
    ("url_credentials", "postgres://etl:pa55w0rd@db:5432/app", "postgres://<URL_CREDENTIALS>@db:5432/app"),
    ("secret", "key AKIAIOSFODNN7EXAMPLE here", "key <SECRET> here"),
    ("secret", "aws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
     "aws_secret_access_key = \"<SECRET>\""),
    ("secret", "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GITHUB_TOKEN=<SECRET>"),
    ("secret", "slack xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx ok", "slack <SECRET> ok"),
    ("secret", f"Authorization: Bearer {JWT}", "Authorization: Bearer <SECRET>"),
    ("secret", f"key file:\n{PEM}\nend", "key file:\n<SECRET>\nend"),
    ("secret", 'config = {"api_key": "9f8e7d6c5b4a39281706f5e4d3c2b1a0"}', 'config = {"api_key": "<SECRET>"}'),
    ("secret", "export CLIENT_SECRET=Zx8Qw3Er5Ty7Ui9Op1As2Df4Gh6Jk8Lz0Xc", "export CLIENT_SECRET=<SECRET>"),
]

# Text that books and documentation are full of, which holds no personal data.
NOT_PERSONAL = [
    "ISBN 978-0-14-143951-8 and ISBN-10: 0-14-143951-3",
    "doi:10.1093/ajae/aaq063, arXiv:2106.09685",
    "Python 3.11.7, release 1.2.3.4, section 4.1.2.3, see version 10.0.0.1",
    "On 2021-03-04, 04.03.2021, 12/31/1999 at 12:30:45",
    "pages 1811-1812, pp. 212-555, vol. 3, lines 1914 1918, the years 1939-1945",
    "some 12 345 678 people, 1,234,567 dollars",
    ">>> int(_, 16)\n3232235521\n>>> 2147483647\n2.8333333333...",
    "HP part no 33471-90901",
    "localhost 127.0.0.1, LAN 192.168.1.10, 10.0.0.8, 172.16.5.4, docs 192.0.2.1 198.51.100.7 203.0.113.9",
    "v6 ::1, fe80::1, 2001:db8::1, a::b, std::vector, dict[a::2]",
    "card 4111 1111 1111 1112 fails Luhn; 1234 5678 9012 3456 too",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
    "SSN 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 commit 4a5b6c7d",
    "password = 'aaaaaaaaaaaaaaaaaaaaaaaa' and token: <your token here>",
    "0x7FFFFFFF, 0xDEADBEEF, color #ff00ff",
    "Chapter 42. The Whiteness of the Whale.  Call me Ishmael.",
    "git clone git@github.com:huggingface/datatrove.git, or scp notes.txt deploy@build-01.internal:~/in/",
]


def verdict(texts, **params):
    step = PersonalData(step="pii", **params)
    return step.filter(pa.table({"text": pa.array(texts, pa.string())}), StepContext())


@pytest.mark.parametrize("kind,text,redacted", FOUND)
def test_each_type_is_found_and_redacted(kind, text, redacted):
    assert find_types(text) == [kind]
    result = verdict([text])
    assert result.text.to_pylist() == [redacted]
    assert result.reasons == [None]
    assert result.figures[kind]["redacted"] == result.figures[kind]["found"] == redacted.count(PLACEHOLDERS[kind])
    assert find_types(redacted) == []  # what validation checks: nothing left


@pytest.mark.parametrize("text", NOT_PERSONAL)
def test_what_is_not_personal_data_is_left_alone(text):
    assert find_types(text) == []
    assert verdict([text]).text is None


@pytest.mark.parametrize("kind,text", [(k, t) for k, t, _ in FOUND])
def test_drop_names_the_type_and_counts_the_row(kind, text):
    result = verdict(["clean text", text], action="drop")
    assert result.reasons == [None, kind]
    assert result.details[1].startswith(f"found {kind} (")
    assert result.text is None
    assert result.figures[kind]["dropped"] == result.figures[kind]["found"] > 0
    assert result.figures[kind]["rows"] == 1


def test_keep_leaves_text_unchanged_but_counts():
    texts = ["Write to jane.doe@example.com or jo@example.org", "nothing here", "SSN 123-45-6789"]
    result = verdict(texts, action="keep")
    assert result.text is None and result.reasons == [None, None, None]
    assert result.figures["email"] == {"found": 2, "rows": 1, "redacted": 0, "kept": 2, "dropped": 0}
    assert result.figures["us_ssn"] == {"found": 1, "rows": 1, "redacted": 0, "kept": 1, "dropped": 0}
    assert result.figures["phone"]["found"] == 0


def test_per_type_actions_override_the_default():
    texts = ["mail jane.doe@example.com", "call (212) 555-0123 or jane.doe@example.com", "ip 8.8.8.8"]
    result = verdict(texts, action="redact", actions={"phone": "drop", "ip_address": "keep"})
    assert result.reasons == [None, "phone", None]
    assert result.details[1] == "found email (1), phone (1)"
    out = result.text.to_pylist()
    assert out[0] == "mail <EMAIL>" and out[2] == "ip 8.8.8.8"
    assert result.figures["email"] == {"found": 2, "rows": 2, "redacted": 1, "kept": 0, "dropped": 1}
    assert result.figures["ip_address"]["kept"] == 1


def test_recipe_entry_and_bad_parameters():
    step = parse_step({"step": "pii", "action": "redact", "actions": {"phone": "drop"}})
    assert isinstance(step, PersonalData) and step.action_for("phone") == "drop" and step.reason_prefix == "pii"
    with pytest.raises(ValidationError, match="telephone"):
        parse_step({"step": "pii", "actions": {"telephone": "drop"}})
    with pytest.raises(ValidationError, match="purge"):
        parse_step({"step": "pii", "action": "purge"})
    with pytest.raises(ValidationError, match="unknown phone regions"):
        parse_step({"step": "pii", "phone_regions": ["XX"]})


def test_phone_regions_decide_national_forms():
    text = "Roma 06 6982 0000, Paris 01 42 68 53 00"
    assert find_types(text) == ["phone"]
    assert len(scan([text], PersonalData(step="pii", phone_regions=["FR", "IT"]))[0][1]) == 2
    assert scan([text], PersonalData(step="pii", phone_regions=["US"])) == {}
    assert find_types("+39 06 6982 0000", PersonalData(step="pii", phone_regions=["US"])) == ["phone"]


def test_overlapping_types_redact_once():
    text = "https://bob:hunter2@mail.example.com and card 4111111111111111"
    spans = scan([text])[0][1]
    assert [s.type for s in spans] == ["url_credentials", "credit_card"]


def test_every_placeholder_survives_a_second_pass():
    text = " ".join(t for _, t, _ in FOUND)
    once = verdict([text]).text.to_pylist()[0]
    assert verdict([once]).text is None
    assert set(re.findall(r"<[A-Z_]+>", once)) == set(PLACEHOLDERS.values())


def test_prefilters_never_hide_what_the_detectors_find():
    """A row its RE2 prefilter rejects is never scanned: the prefilter must accept every
    row in which its exact detector finds something."""
    texts = pa.array([t for _, t, _ in FOUND] + NOT_PERSONAL)
    for detector in DETECTORS:
        passed = pc.match_substring_regex(texts, detector.prefilter).to_pylist()
        for text, ok in zip(texts.to_pylist(), passed):
            if any(True for _ in detector.find(text, DEFAULT)):
                assert ok, (detector.type, text)


def test_null_and_empty_rows():
    result = verdict([None, "", "a@b.co"])
    assert result.reasons == [None, None, None]
    assert result.text.to_pylist() == [None, "", "<EMAIL>"]


def test_identity_names_the_validation_data():
    identity = DEFAULT.identity()
    assert identity["step"] == "pii" and "phonenumbers" in identity and "python-stdnum" in identity


def _paragraphs(corpora):
    rows = []
    for path in sorted((corpora / "gutenberg").glob("*-0.txt")):
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        body = text.split("*** START OF", 1)[-1].split("*** END OF", 1)[0]
        rows += [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    rows += [line.strip() for line in (corpora / "wikitext-2" / "test.txt").read_text().splitlines() if line.strip()]
    return rows


def test_real_books_and_articles_are_left_alone(corpora):
    rows = _paragraphs(corpora)
    result = verdict(rows)
    changed = 0 if result.text is None else sum(a != b for a, b in zip(rows, result.text.to_pylist()))
    assert len(rows) > 5000
    assert changed <= 0.005 * len(rows)
