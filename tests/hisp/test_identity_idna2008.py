"""Internationalised domain names by IDNA 2008 and UTS 46 (what registries, browsers and, with
the idna package installed, dnspython use), not Python's IDNA 2003 codec; ASCII names as before."""

from __future__ import annotations

import encodings.idna as idna2003
import re

import dns.name
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.discovery.names import canonical_domain
from hisp.services import identity
from hisp.services.identity import IdentityError

# faß: IDNA 2003 maps the sharp s to "ss" (fass.example, another registrable name); IDNA 2008
# keeps it (RFC 5892 lists U+00DF as PVALID): the A-label of .de's faß.de is xn--fa-hia.
SHARP_S = ("faß.example", "xn--fa-hia.example")
# ὀδυσσεύς ends in a final sigma (U+03C2), which IDNA 2003 folded to σ.
FINAL_SIGMA = ("ὀδυσσεύς.example", "xn--pxac3bcak3d8526a.example")


@pytest.mark.parametrize(("typed", "stored"), [SHARP_S, FINAL_SIGMA])
def test_a_deviation_character_is_kept_as_idna_2008_spells_it(typed: str, stored: str) -> None:
    assert identity.normalise_domain(typed) == stored
    # The name discovery asks DNS for is the same one (agent/ via dnspython).
    assert canonical_domain(typed) == stored


@pytest.mark.parametrize("stored", [SHARP_S[1], FINAL_SIGMA[1], "XN--FA-HIA.example."])
def test_the_a_label_of_a_deviation_character_is_a_valid_label(stored: str) -> None:
    # IDNA 2003 round-trips xn--fa-hia to "fass" and refused it as not an A-label.
    assert identity.normalise_domain(stored) == stored.lower().rstrip(".")


def test_capital_letters_map_as_uts_46_does() -> None:
    # Case is folded by UTS 46, not str.lower(): a capital sigma is σ wherever it stands, and
    # faß typed with a capital F is the same name.
    assert identity.normalise_domain("Faß.Example") == SHARP_S[1]
    assert identity.normalise_domain("ὈΔΥΣΣΕΎΣ.example") == "xn--pxac5babi3d8526a.example"
    # Discovery asks DNS for the same name (str.lower() first kept the capital as a final ς).
    assert canonical_domain("ὈΔΥΣΣΕΎΣ.example") == "xn--pxac5babi3d8526a.example"
    assert canonical_domain("direct.ΟΔΥΣΣΕΥΣ") == identity.normalise_domain("direct.ΟΔΥΣΣΕΥΣ")
    assert canonical_domain("Faß.Example") == SHARP_S[1]
    assert identity.normalise_domain("bücher\u3002example") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        # A symbol: IDNA 2003 took it (xn--n3h.example), IDNA 2008 disallows it.
        ("\u2603.example", "IDNA 2008 does not allow"),
        ("mail.\u2665love.example", "IDNA 2008 does not allow"),
        # A zero width joiner outside the scripts that need one (RFC 5892 appendix A.2);
        # IDNA 2003 silently dropped it and stored ab.example.
        ("a\u200db.example", "joiner"),
        # Right-to-left and left-to-right letters in one label (RFC 5893).
        ("\u05d0a.example", "right-to-left"),
        # 60 characters of Unicode, 67 as an A-label: over the 63 octets of a DNS label.
        ("\u00fc" * 60 + ".example", "longer than 63 characters in its ASCII"),
    ],
)
def test_a_label_idna_2008_refuses_is_refused_with_the_reason(typed: str, why: str) -> None:
    with pytest.raises(IdentityError, match="not a valid domain name") as caught:
        identity.normalise_domain(typed)
    assert why in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("stored", ["xn--n3h.example", "xn--g6h.example"])
def test_an_idna_2003_only_a_label_is_refused(stored: str) -> None:
    # A snowman and a heart: A-labels under IDNA 2003 (they round-trip there), not under 2008.
    label = stored.split(".")[0]
    assert idna2003.ToASCII(idna2003.ToUnicode(label)) == label.encode()
    with pytest.raises(IdentityError, match="not a valid internationalised label"):
        identity.normalise_domain(stored)


def test_addresses_take_the_same_domain_rule() -> None:
    assert identity.normalise_address("Dr.Weiss@faß.example") == "Dr.Weiss@xn--fa-hia.example"
    with pytest.raises(IdentityError, match="not a valid Direct address"):
        identity.normalise_address("dr@\u2603.example")


# --- ASCII names: unchanged ------------------------------------------------------------------

_OLD_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _before(name: str) -> str:
    """normalise_domain as it was with the IDNA 2003 codec, for names without reserved
    (``??--``) labels, whose A-label check is what changed."""
    value = name.strip()
    if value.endswith("."):
        value = value[:-1]
    value = value.lower()
    if len(value) > 253 * 4:
        raise IdentityError("long")
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise IdentityError("invalid") from None
    labels = value.split(".")
    if not all(_OLD_LABEL.match(label) for label in labels):
        raise IdentityError("invalid")
    if len(value) > 253:
        raise IdentityError("long")
    if len(labels) < 2:
        raise IdentityError("one label")
    if labels[-1].isdigit():
        raise IdentityError("numeric")
    return value


def _outcome(function: object, name: str) -> str:
    try:
        return "stored " + function(name)  # type: ignore[operator]
    except IdentityError as exc:
        return "refused " + str(exc)


_KIND = {"long": "longer than 253", "one label": "at least two labels", "numeric": "numeric"}

ascii_names = st.lists(
    st.one_of(
        st.sampled_from(["example", "org", "Direct", "a-b", "1", "123", "-a", "a-", "", "x" * 63,
                         "x" * 64, "a_b", "ex ample", "@", "[1"]),
        st.text(alphabet="abcXYZ019-_. ", min_size=0, max_size=12),
    ),
    min_size=1,
    max_size=6,
).map(".".join).map(lambda name: name + "." if len(name) % 3 == 0 else name)


@given(ascii_names)
def test_ascii_names_are_stored_and_refused_as_before(name: str) -> None:
    if any(label[2:4] == "--" for label in name.strip().rstrip(".").split(".")):
        return  # reserved labels: judged by IDNA 2008 now (tests above)
    before, now = _outcome(_before, name), _outcome(identity.normalise_domain, name)
    if before.startswith("stored"):
        assert now == before
        return
    kind = before.removeprefix("refused ")
    assert now.startswith("refused not a valid domain name")
    if kind == "invalid":
        assert not now.endswith(")")  # the plain refusal, no reason given
    else:
        assert _KIND[kind] in now


def test_dnspython_spells_unicode_names_by_idna_2008() -> None:
    # The agent (no Django) names domains through dnspython, which uses IDNA 2008 once the idna
    # package is installed: the project depends on it so both sides agree.
    assert dns.name.have_idna_2008
    assert dns.name.from_text("faß.example").to_text(omit_final_dot=True) == SHARP_S[1]
