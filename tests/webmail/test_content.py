"""Units under the pages: PHI heuristics, reason sentences, CDA and XDM parsing, file names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from agent.errors import Code
from hisp.models import Delivery
from webmail.cda import DocumentError, parse_cda
from webmail.content import safe_filename
from webmail.phi import phi_reasons
from webmail.reasons import AGENT_REASONS, STATE_SENTENCES, sentence
from webmail.xdm import ArchiveError, documents, read_document

CCD = (Path(__file__).parent / "data" / "ccd.xml").read_bytes()


@pytest.mark.parametrize("subject", [
    "Follow-up for Jones, Isabella", "DOB 1975-05-01", "pt Smith labs", "MRN 4482913",
    "Results 05/01/1975", "Mrs. Jones referral", "SSN 123-45-6789",
])
def test_phi_heuristics_flag_subjects_with_patient_details(subject):
    assert phi_reasons(subject)


@pytest.mark.parametrize("subject", ["Referral", "Lab results attached", "Consult request", ""])
def test_phi_heuristics_leave_ordinary_subjects_alone(subject):
    assert phi_reasons(subject) == []


def test_every_agent_code_has_a_human_sentence():
    assert set(AGENT_REASONS) == set(Code)
    assert set(STATE_SENTENCES) == set(Delivery.State.values)


def test_a_reason_code_wins_over_the_state_sentence():
    assert sentence("failed", "untrusted-recipient: detail") == AGENT_REASONS[Code.UNTRUSTED_RECIPIENT]
    assert sentence("failed", "550 5.1.1 unknown") == STATE_SENTENCES["failed"]


def test_parse_cda_reads_header_and_sections():
    document = parse_cda(CCD)
    assert document.patient_name == "Isabella Isa Jones"
    assert document.patient_ids == ("MRN-4482",)
    assert document.patient_gender == "Female"
    assert [s.title for s in document.sections] == [
        "Allergies and Intolerances", "Problems", "Problem details"]
    assert document.sections[2].level == 2
    assert 'colspan="2"' in document.sections[0].html


@pytest.mark.parametrize(("data", "code"), [
    (b"<not-closed", "malformed"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>', "dtd-forbidden"),
    (b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://evil.example/a.dtd"><a/>', "dtd-forbidden"),
    (b'<html xmlns="http://www.w3.org/1999/xhtml"/>', "not-cda"),
])
def test_parse_cda_refuses_bad_documents_with_a_code(data, code):
    with pytest.raises(DocumentError) as caught:
        parse_cda(data)
    assert caught.value.code == code


def test_parse_cda_refuses_oversized_documents(monkeypatch):
    monkeypatch.setattr("webmail.cda.MAX_CDA_BYTES", 100)
    with pytest.raises(DocumentError) as caught:
        parse_cda(CCD)
    assert caught.value.code == "too-large"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_xdm_refuses_a_member_compressed_implausibly_well():
    with pytest.raises(ArchiveError) as caught:
        documents(_zip({"IHE_XDM/SUBSET01/DOC.XML": b"\0" * (5 * 1024 * 1024)}))
    assert caught.value.code == "suspicious-ratio"


def test_xdm_refuses_too_many_members(monkeypatch):
    monkeypatch.setattr("webmail.xdm.MAX_MEMBERS", 3)
    with pytest.raises(ArchiveError) as caught:
        documents(_zip({f"IHE_XDM/SUBSET01/D{i}.XML": b"x" for i in range(4)}))
    assert caught.value.code == "too-many-members"


def test_xdm_refuses_a_zip_that_is_not_an_xdm_package():
    with pytest.raises(ArchiveError) as caught:
        documents(_zip({"notes.txt": b"hello"}))
    assert caught.value.code == "not-xdm"


def test_xdm_refuses_garbage():
    with pytest.raises(ArchiveError) as caught:
        documents(b"PK\x03\x04 not really a zip")
    assert caught.value.code == "bad-zip"


def test_xdm_reads_a_document_and_refuses_unknown_indexes():
    package = _zip({"IHE_XDM/SUBSET01/METADATA.XML": b"<m/>", "IHE_XDM/SUBSET01/DOC.XML": CCD})
    document, data = read_document(package, 1)
    assert document.name == "IHE_XDM/SUBSET01/DOC.XML" and data == CCD
    with pytest.raises(ArchiveError) as caught:
        read_document(package, 0)  # the metadata file is not a document
    assert caught.value.code == "no-such-document"


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"), ("C:\\Windows\\evil.exe", "evil.exe"),
    ("a\r\nb.txt", "a_b.txt"), ("", "attachment-3.pdf"), ("...", "attachment-3.pdf"),
])
def test_safe_filename_keeps_only_a_name(name, expected):
    assert safe_filename(name, index=3, content_type="application/pdf") == expected


@pytest.mark.parametrize(("state", "detail", "expected"), [
    ("failed", "no processed MDN in time", "never confirmed receipt in time"),
    ("failed", "no dispatched MDN in time", "never confirmed delivery to the mailbox"),
    ("failed", "failed MDN: disk full", "could not deliver the message"),
    ("failed", "DSN 5.1.1", "delivery failure notice"),
    ("queued", "certificate found", "certificate was found"),
    ("rejected", "mailbox-disabled", "mailbox is disabled"),
    ("deferred", "421 4.3.0 try later", "we will retry"),
])
def test_flow_details_read_as_sentences(state, detail, expected):
    assert expected in sentence(state, detail)
