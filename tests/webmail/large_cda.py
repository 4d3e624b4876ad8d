"""Large, legitimate C-CDA documents for tests and measurements: a longitudinal record with a
structured body, the usual sections, and results sections whose narrative table has one row per
lab result and a coded entry (organizer, observation, LOINC code, value, reference range) behind
each row, as certified EHRs send them."""

from __future__ import annotations

HEADER = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns:sdtc="urn:hl7-org:sdtc">
  <realmCode code="US"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="2.16.840.1.113883.10.20.22.1.1" extension="2015-08-01"/>
  <templateId root="2.16.840.1.113883.10.20.22.1.2" extension="2015-08-01"/>
  <id root="2.16.840.1.113883.19.5.99999.1" extension="LONG-1"/>
  <code code="34133-9" codeSystem="2.16.840.1.113883.6.1" displayName="Summarization of Episode Note"/>
  <title>Longitudinal Health Record</title>
  <effectiveTime value="20240315101500-0500"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="en-US"/>
  <recordTarget>
    <patientRole>
      <id extension="MRN-4482" root="2.16.840.1.113883.19.5.99999.2"/>
      <addr use="HP"><streetAddressLine>1357 Amber Drive</streetAddressLine><city>Beaverton</city>
        <state>OR</state><postalCode>97006</postalCode><country>US</country></addr>
      <telecom value="tel:+1(555)555-2003" use="HP"/>
      <patient>
        <name use="L"><given>Isabella</given><given>Isa</given><family>Jones</family></name>
        <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1" displayName="Female"/>
        <birthTime value="19750501"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20240315"/>
    <assignedAuthor>
      <id extension="5555555555" root="2.16.840.1.113883.4.6"/>
      <assignedPerson><name><prefix>Dr</prefix><given>Henry</given><family>Seven</family></name></assignedPerson>
      <representedOrganization><name>Community Health and Hospitals</name></representedOrganization>
    </assignedAuthor>
  </author>
  <component>
    <structuredBody>
"""
FOOTER = b"""    </structuredBody>
  </component>
</ClinicalDocument>
"""
TESTS = [
    (b"2345-7", b"Glucose", b"mg/dL", b"70", b"99"),
    (b"2160-0", b"Creatinine", b"mg/dL", b"0.6", b"1.2"),
    (b"2823-3", b"Potassium", b"mmol/L", b"3.5", b"5.1"),
    (b"2951-2", b"Sodium", b"mmol/L", b"136", b"145"),
    (b"718-7", b"Hemoglobin", b"g/dL", b"12.0", b"15.5"),
    (b"6690-2", b"Leukocytes", b"10*3/uL", b"4.5", b"11.0"),
    (b"777-3", b"Platelets", b"10*3/uL", b"150", b"450"),
    (b"4548-4", b"Hemoglobin A1c", b"%", b"4.0", b"5.6"),
]


def _row(section: int, row: int) -> tuple[bytes, bytes]:
    """One result as a narrative table row and its coded entry."""
    code, name, unit, low, high = TESTS[row % len(TESTS)]
    ref = b"result-%d-%d" % (section, row)
    day = b"2%03d%02d%02d" % (10 + row // 336 % 14, 1 + row // 28 % 12, 1 + row % 28)
    value = b"%d.%d" % (50 + row * 7 % 90, row % 10)
    flag = b"H" if row % 9 == 0 else b"N"
    tr = (
        b'<tr><td><content ID="'
        + ref
        + b'">'
        + name
        + b"</content></td><td>"
        + value
        + b" "
        + unit
        + b"</td><td>"
        + low
        + b"-"
        + high
        + b" "
        + unit
        + b"</td><td>"
        + flag
        + b"</td><td>"
        + day[:4]
        + b"-"
        + day[4:6]
        + b"-"
        + day[6:8]
        + b"</td></tr>\n"
    )
    entry = b"""<component><observation classCode="OBS" moodCode="EVN">
<templateId root="2.16.840.1.113883.10.20.22.4.2" extension="2015-08-01"/>
<id root="7c0704bb-9c40-41b5-9c7d-26b2d59e234f" extension="%s"/>
<code code="%s" codeSystem="2.16.840.1.113883.6.1" codeSystemName="LOINC" displayName="%s">
<originalText><reference value="#%s"/></originalText></code>
<statusCode code="completed"/><effectiveTime value="%s"/>
<value xsi:type="PQ" value="%s" unit="%s"/>
<interpretationCode code="%s" codeSystem="2.16.840.1.113883.5.83"/>
<author><time value="%s"/><assignedAuthor><id root="2.16.840.1.113883.4.6" extension="5555555555"/></assignedAuthor></author>
<referenceRange><observationRange><value xsi:type="IVL_PQ"><low value="%s" unit="%s"/><high value="%s" unit="%s"/></value></observationRange></referenceRange>
</observation></component>
""" % (ref, code, name, ref, day, value, unit, flag, day, low, unit, high, unit)
    return tr, entry


def _results_section(section: int, rows: int, *, entries: bool) -> bytes:
    trs, coded = zip(*(_row(section, row) for row in range(rows)), strict=True)
    return (
        b'<component><section><templateId root="2.16.840.1.113883.10.20.22.2.3.1" '
        b'extension="2015-08-01"/><code code="30954-2" codeSystem="2.16.840.1.113883.6.1"/>'
        b'<title>Results, panel %d</title><text><table border="1" width="100%%"><thead><tr>'
        b"<th>Test</th><th>Result</th><th>Reference range</th><th>Flag</th><th>Date</th></tr>"
        b"</thead><tbody>\n"
        % (section + 1)
        + b"".join(trs)
        + b'</tbody></table></text><entry typeCode="DRIV"><organizer classCode="BATTERY" '
        b'moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.1"/>'
        b'<statusCode code="completed"/>\n'
        + b"".join(coded if entries else ())
        + b"</organizer></entry></section></component>\n"
    )


SHORT_SECTIONS = b"""<component><section><title>Allergies and Intolerances</title><text><table>
<thead><tr><th>Substance</th><th>Reaction</th><th>Status</th></tr></thead><tbody>
<tr><td>Penicillin G benzathine</td><td>Hives</td><td>Active</td></tr></tbody></table></text>
</section></component>
<component><section><title>Problems</title><text><list listType="ordered"><item>Asthma</item>
<item>Type 2 diabetes mellitus</item></list></text></section></component>
<component><section><title>Medications</title><text><paragraph>Metformin 500 mg twice daily
</paragraph></text></section></component>
"""


def large_cda(*, sections: int, rows: int, entries: bool = True) -> bytes:
    """A document of ``sections`` results sections with ``rows`` results each (about 1.9 KB a
    result with its entry, 0.2 KB without)."""
    body = b"".join(_results_section(s, rows, entries=entries) for s in range(sections))
    return HEADER + SHORT_SECTIONS + body + FOOTER


def cda_of_size(megabytes: float, *, entries: bool = True) -> bytes:
    """Just under ``megabytes`` MiB, in 20 results sections (fewer for small sizes)."""
    tr, entry = _row(0, 1)
    per_row = len(tr) + (len(entry) if entries else 0)
    rows = int(megabytes * 1024 * 1024 * 0.97 / per_row)
    sections = min(20, max(1, rows // 200))
    return large_cda(sections=sections, rows=rows // sections, entries=entries)
