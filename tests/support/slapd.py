"""Private OpenLDAP (``slapd``) instances on free loopback ports, for discovery tests.

Each instance runs from a cn=config-less ``slapd.conf`` (``-f``) with one mdb database per
suffix in a temporary folder, the core/cosine/inetorgperson schemas, anonymous read access, and
the suffixes listed in the root DSE ``namingContexts``.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from ldap3 import BASE, MODIFY_REPLACE, NONE, Connection, Server
from ldap3.core.exceptions import LDAPException

from tests.support.process import running, stop_process
from tests.support.services import free_port, require_binary

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
ROOT_PASSWORD = "test-only-root-password"


class SlapdServer:
    def __init__(self, directory: Path, port: int, suffixes: Sequence[str]) -> None:
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = port
        self.suffixes = tuple(suffixes)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def root_dn(self, suffix: str) -> str:
        return f"cn=admin,{suffix}"

    @property
    def log(self) -> str:
        path = self.directory / "slapd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> Path:
        d = self.directory
        lines = [
            *(
                f"include {SCHEMA_DIR / name}.schema"
                for name in ("core", "cosine", "inetorgperson")
            ),
            f"pidfile {d / 'slapd.pid'}",
            f"argsfile {d / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            # Anonymous read of the directory and of the root DSE (RFC 4512 5.1).
            'access to dn.base="" by * read',
        ]
        for index, suffix in enumerate(self.suffixes):
            db = d / f"db{index}"
            db.mkdir()
            lines += [
                "database mdb",
                "maxsize 16777216",
                f'suffix "{suffix}"',
                f'rootdn "{self.root_dn(suffix)}"',
                f"rootpw {ROOT_PASSWORD}",
                f"directory {db}",
                "access to * by * read",
            ]
        config = d / "slapd.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        config = self._write_config()
        with open(self.directory / "slapd.log", "wb") as log:
            # -d 0: stay in the foreground without debug output, so we own the process.
            self.process = subprocess.Popen(
                [SLAPD, "-d", "0", "-f", str(config), "-h", f"{self.url}/"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited ({self.process.returncode}):\n{self.log}")
            try:
                if self.naming_contexts():
                    break
            except LDAPException:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"slapd did not answer in 15s:\n{self.log}")
        for suffix in self.suffixes:
            self._add_suffix_entry(suffix)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def naming_contexts(self) -> list[str]:
        connection = Connection(Server(self.host, port=self.port, get_info=NONE, connect_timeout=1))
        connection.open()
        connection.bind()
        try:
            connection.search("", "(objectClass=*)", BASE, attributes=["namingContexts"])
            values: list[str] = []
            for entry in connection.response:
                for key, raw in entry.get("raw_attributes", {}).items():
                    if key.lower() == "namingcontexts":
                        values += [v.decode() for v in raw]
            return values
        finally:
            connection.unbind()

    def admin(self, suffix: str) -> Connection:
        connection = Connection(
            Server(self.host, port=self.port, get_info=NONE),
            user=self.root_dn(suffix),
            password=ROOT_PASSWORD,
            raise_exceptions=True,
        )
        connection.bind()
        return connection

    def _add_suffix_entry(self, suffix: str) -> None:
        first = suffix.split(",", 1)[0]
        attribute, _, value = first.partition("=")
        connection = self.admin(suffix)
        try:
            if attribute.lower() == "dc":
                connection.add(suffix, ["dcObject", "organization"], {"dc": value, "o": value})
            else:
                connection.add(suffix, ["organization"], {"o": value})
        finally:
            connection.unbind()

    def add_person(
        self,
        suffix: str,
        *,
        mail: str,
        smime: Sequence[x509.Certificate] = (),
        binary: Sequence[x509.Certificate] = (),
        raw_smime: Sequence[bytes] = (),
        uid: str | None = None,
    ) -> str:
        """An inetOrgPerson with ``mail`` and certificates; returns its DN.

        ``smime`` certificates go in ``userSMIMECertificate`` as one PKCS#7 bundle each (RFC
        2798), ``binary`` ones in ``userCertificate;binary`` as DER, ``raw_smime`` as given.
        """
        uid = uid or mail.replace("@", ".")
        dn = f"uid={uid},{suffix}"
        attributes: dict[str, object] = {"uid": uid, "cn": uid, "sn": uid, "mail": mail}
        values = [pkcs7.serialize_certificates([c], Encoding.DER) for c in smime] + list(raw_smime)
        if values:
            attributes["userSMIMECertificate"] = values
        if binary:
            attributes["userCertificate;binary"] = [c.public_bytes(Encoding.DER) for c in binary]
        connection = self.admin(suffix)
        try:
            connection.add(dn, ["inetOrgPerson"], attributes)
        finally:
            connection.unbind()
        return dn

    def replace(self, suffix: str, dn: str, attribute: str, values: Sequence[bytes]) -> None:
        connection = self.admin(suffix)
        try:
            connection.modify(dn, {attribute: [(MODIFY_REPLACE, list(values))]})
        finally:
            connection.unbind()


@contextmanager
def slapd_server(suffixes: Sequence[str] = ("dc=hisp,dc=test",)) -> Iterator[SlapdServer]:
    """A running slapd; skips (fails under CI=true) when slapd is not installed."""
    require_binary("slapd", SLAPD)
    with tempfile.TemporaryDirectory(prefix="hisp-slapd-") as tmp:

        def make(attempt: int) -> SlapdServer:
            directory = Path(tmp) / str(attempt)
            directory.mkdir()
            return SlapdServer(directory, free_port(), suffixes)

        with running("slapd", make) as server:
            yield server


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdServer]:
    """One private slapd (suffix dc=hisp,dc=test) for the session."""
    with slapd_server() as server:
        yield server
