"""``manage.py dnszone``, ``manage.py ldif`` and ``manage.py rundns`` as an operator runs them."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from django.core.management import call_command
from django.core.management.base import CommandError

from hisp.models import Address, Certificate, Domain
from hisp.services import pki
from tests.hisp.dns.conftest import DOMAIN, HOST
from tests.support.bind import free_udp_tcp_port

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def zone_certs(zone: dns.zone.Zone, name: str) -> set[bytes]:
    rdataset = zone.get_rdataset(name, "CERT")
    return {r.certificate for r in rdataset} if rdataset else set()


def test_dnszone_full_is_a_zone_file_with_our_current_certificates(alice: Address) -> None:
    zone = dns.zone.from_text(run("dnszone", DOMAIN, "--full"), relativize=False)
    assert zone.origin.to_text() == f"{DOMAIN}."
    assert zone.get_rdataset(f"{DOMAIN}.", "SOA")
    assert zone.get_rdataset(f"{DOMAIN}.", "NS")[0].target.to_text() == f"{HOST}."
    assert zone.get_rdataset(f"{DOMAIN}.", "MX")[0].exchange.to_text() == f"{HOST}."
    assert zone_certs(zone, f"alice.{DOMAIN}.") == {
        bytes(r.der) for r in Certificate.objects.filter(bound_name=alice.address)
    }
    assert zone_certs(zone, f"{DOMAIN}.") == {
        bytes(r.der) for r in Certificate.objects.filter(bound_name=DOMAIN, binding="domain")
    }


def test_dnszone_fragment_leaves_soa_and_ns_to_the_operator(alice: Address) -> None:
    text = run("dnszone", DOMAIN)
    types = {line.split()[3] for line in text.splitlines() if not line.startswith(";")}
    assert types == {"MX", "CERT", "A", "AAAA"}


def test_dnszone_leaves_out_revoked_certificates(alice: Address) -> None:
    [row] = Certificate.objects.filter(bound_name=alice.address)
    pki.revoke(row)
    assert f"alice.{DOMAIN}." not in run("dnszone", DOMAIN)


@pytest.mark.parametrize(
    ("command", "domain", "message"),
    [
        ("dnszone", "unknown.example.org", "domain unknown.example.org is not hosted here"),
        ("dnszone", "not a domain", "not a valid domain name"),
        ("ldif", "unknown.example.org", "domain unknown.example.org is not hosted here"),
        ("ldif", "bad!label.example", "not a valid domain name"),
    ],
)
def test_publication_commands_reject_domains_we_do_not_host(
    provider: Domain, command: str, domain: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run(command, domain)


def test_ldif_entries_for_addresses_and_domain(alice: Address, provider: Domain) -> None:
    Address.objects.create(address=f"nocert@{DOMAIN}", domain=provider)  # nothing to publish
    text = run("ldif", DOMAIN)
    entries = text.split("\n\n")[1:]
    assert [e.splitlines()[0] for e in entries] == [
        f"dn: mail=alice@{DOMAIN},dc=hospital,dc=example,dc=org",
        # Every domain's postmaster has its certificate (RFC 5321 4.5.1): published like alice's.
        f"dn: mail=postmaster@{DOMAIN},dc=hospital,dc=example,dc=org",
        f"dn: mail={DOMAIN},dc=hospital,dc=example,dc=org",
    ]
    unfolded = text.replace("\n ", "")
    smime = [
        base64.b64decode(line.split(":: ", 1)[1])
        for line in unfolded.splitlines()
        if line.startswith("userSMIMECertificate:: ")
    ]
    found = {
        c.public_bytes(Encoding.DER) for b in smime for c in pkcs7.load_der_pkcs7_certificates(b)
    }
    assert found == {
        bytes(r.der)
        for r in Certificate.objects.filter(
            bound_name__in=[alice.address, f"postmaster@{DOMAIN}", DOMAIN],
            binding__in=["address", "domain"],
        )
    }
    assert all(len(line) <= 76 for line in text.splitlines())


def test_ldif_base_dn_option_and_its_validation(alice: Address) -> None:
    text = run("ldif", DOMAIN, "--base-dn", "ou=direct,o=Hospital")
    assert f"dn: mail=alice@{DOMAIN},ou=direct,o=Hospital" in text
    with pytest.raises(CommandError, match="not a distinguished name"):
        run("ldif", DOMAIN, "--base-dn", "no equals sign")


def test_ldif_non_ascii_names_are_base64(provider: Domain) -> None:
    from hisp.services import identity

    identity.add_address(f"zoe@{DOMAIN}", name="Zoë Ångström", address_cert=True)
    text = run("ldif", DOMAIN)
    assert "cn:: " + base64.b64encode("Zoë Ångström".encode()).decode() in text


def _manage(env: dict[str, str], *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, **kw,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_rundns_serves_our_zones_until_terminated(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env |= {"HISP_DATA_DIR": str(tmp_path), "HISP_CA_KEY_BITS": "2048", "HISP_HOSTNAME": HOST}
    for args in (("migrate", "-v0"), ("domain", "add", DOMAIN)):
        assert _manage(env, *args).returncode == 0
    bad = _manage(env, "rundns", "--port", "0")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == "CommandError: --port must be between 1 and 65535"
    port = free_udp_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rundns", "--bind", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "listening" not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < deadline, "rundns did not start"
        query = dns.message.make_query(DOMAIN, dns.rdatatype.CERT)
        for send in (dns.query.udp, dns.query.tcp):
            response = send(query, "127.0.0.1", port=port, timeout=5)
            assert response.rcode() == dns.rcode.NOERROR
        assert dns.query.tcp(query, "127.0.0.1", port=port, timeout=5).answer
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("HISP_LDAP_SERVER", "ldap.example.org:99999", "HISP_LDAP_SERVER must be host"),
        ("HISP_PUBLIC_IPV4", "300.1.2.3", "HISP_PUBLIC_IPV4 is not an address"),
        ("HISP_PUBLIC_IPV6", "127.0.0.1", "HISP_PUBLIC_IPV6 is not an address"),
    ],
)
def test_dnszone_reports_bad_publication_settings(
    provider: Domain, settings: pytest.FixtureRequest, setting: str, value: str, message: str
) -> None:
    setattr(settings, setting, value)
    with pytest.raises(CommandError, match=message):
        run("dnszone", DOMAIN)


@pytest.mark.slow
def test_rundns_without_a_database_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["HISP_DATA_DIR"] = str(tmp_path)  # never migrated: no tables
    result = _manage(env, "rundns", "--port", str(free_udp_tcp_port()))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("CommandError: cannot load the DNS zones: OperationalError")


def _ldif_certificates(text: str) -> dict[str, set[bytes]]:
    """``userCertificate;binary`` values by the entry's ``mail``."""
    found: dict[str, set[bytes]] = {}
    for entry in text.replace("\n ", "").split("\n\n")[1:]:
        lines = entry.splitlines()
        mail = next(line.split(": ", 1)[1] for line in lines if line.startswith("mail: "))
        found[mail] = {
            base64.b64decode(line.split(":: ", 1)[1])
            for line in lines
            if line.startswith("userCertificate;binary:: ")
        }
    return found


def test_ldif_publishes_only_current_encryption_certificates(provider: Domain) -> None:
    for local in ("split", "renewed", "revoked", "suspended"):
        Address.objects.create(address=f"{local}@{DOMAIN}", domain=provider)
    rows = pki.issue_for(f"split@{DOMAIN}", separate=True)  # one to sign, one to encrypt
    [encrypting] = [r for r in rows if r.usage == Certificate.Usage.ENCRYPTION]
    [old] = pki.issue_for(f"renewed@{DOMAIN}")
    new = pki.renew(old)
    [revoked] = pki.issue_for(f"revoked@{DOMAIN}")
    pki.revoke(revoked)
    pki.issue_for(f"suspended@{DOMAIN}")
    Address.objects.filter(address=f"suspended@{DOMAIN}").update(status=Address.Status.SUSPENDED)
    published = _ldif_certificates(run("ldif", DOMAIN))
    assert published[f"split@{DOMAIN}"] == {bytes(encrypting.der)}
    assert published[f"renewed@{DOMAIN}"] == {bytes(new.der)}
    assert f"revoked@{DOMAIN}" not in published
    assert f"suspended@{DOMAIN}" not in published
    assert set(published) == {
        f"split@{DOMAIN}",
        f"renewed@{DOMAIN}",
        f"postmaster@{DOMAIN}",
        DOMAIN,
    }
