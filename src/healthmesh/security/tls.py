"""TLS certificates for a demo or test network: a local CA and server certificates.

Production nodes take certificates from their organisation's CA (or ACME); for a
network on one machine, ``healthmesh tls init`` makes a local CA once and a server
certificate per listener, so every listener can speak TLS without any outside service::

    DIR/tls/ca-key.pem       the local CA's key (mode 0600; keep it away from servers)
    DIR/tls/ca-cert.pem      trust anchor: give it to clients (``--cacert``, ``verify=``)
    DIR/tls/server-key.pem   the server's key (mode 0600)
    DIR/tls/server-cert.pem  CN=first host, SAN = every host (DNS names and IP addresses)

ECDSA P-256 keys: every TLS client supports them (Ed25519 TLS certificates are not yet
accepted by browsers).
"""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from healthmesh.security.errors import SecurityError
from healthmesh.security.keys import read_key_file, write_key_file

__all__ = ["TlsFiles", "client_context", "create_tls"]

CA_DAYS = 3650
SERVER_DAYS = 397  # the longest lifetime browsers accept for a server certificate


class TlsFiles:
    """Paths of the TLS files of one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "tls"
        self.ca_key = self.folder / "ca-key.pem"
        self.ca_cert = self.folder / "ca-cert.pem"
        self.server_key = self.folder / "server-key.pem"
        self.server_cert = self.folder / "server-cert.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthmesh local CA")])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _local_ca(files: TlsFiles, now: datetime) -> tuple[ec.EllipticCurvePrivateKey,
                                                       x509.Certificate]:
    if files.ca_key.exists() and files.ca_cert.exists():
        key = read_key_file(files.ca_key)
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("healthmesh local CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    write_key_file(files.ca_key, key)
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def create_tls(folder: Path, hosts: list[str], *, ca_folder: Path | None = None) -> TlsFiles:
    """A local CA (made once in ``ca_folder`` — default ``folder`` — then reused) and a new
    server certificate for ``hosts`` in ``folder``."""
    if not hosts or any(not h or len(h) > 253 or " " in h for h in hosts):
        raise SecurityError("give the host names or addresses the server is reached at")
    files = TlsFiles(folder)
    authority = TlsFiles(ca_folder) if ca_folder is not None else files
    for where in {files.folder, authority.folder}:
        where.mkdir(parents=True, exist_ok=True)
        where.chmod(0o700)
    now = datetime.now(UTC)
    ca_key, ca_cert = _local_ca(authority, now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=SERVER_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    for path in (files.server_key,):
        if path.exists():
            path.unlink()  # a new server certificate comes with a new key
    write_key_file(files.server_key, key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def client_context(ca_file: Path | str) -> ssl.SSLContext:
    """A TLS client context that trusts ``ca_file`` (a local CA) for verification."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise SecurityError(f"cannot load the TLS trust anchor {ca_file}: {exc}") from None
