"""TLS contexts (TLS 1.2 minimum, modern AEAD ciphers) and the self-signed certificate of the
embedded default."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ALPN_CLIENT = "xmpp-client"   # XEP-0368


class TlsError(Exception):
    """The certificate or key cannot be used; the text says which file and why."""


def server_context(cert: Path, key: Path, *, min_version: str = "1.2", ciphers: str | None = None,
                   alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise TlsError(f"the cipher list {ciphers!r} is not accepted by OpenSSL: {exc}") from None
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TlsError(f"cannot read {exc.filename}: no such file") from None
    except ssl.SSLError as exc:
        raise TlsError(f"cannot use certificate {cert} with key {key}: {exc.reason or exc}") from None
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def ensure_self_signed(folder: Path, domains: list[str], name: str = "stockade") -> tuple[Path, Path]:
    """Return (cert, key) in `folder`, generating a self-signed certificate when none exists or when
    it does not cover every domain (and its subdomains, for components and group chat)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    # Loopback addresses too, so that local clients and browsers can use https://127.0.0.1:port/.
    wanted = sorted(set(domains) | {"127.0.0.1", "::1"})
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = set(san.get_values_for_type(x509.DNSName)) | {str(a) for a in san.get_values_for_type(x509.IPAddress)}
            still_valid = cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
            if still_valid and all(d in names for d in wanted):
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for d in wanted:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(d)))
        except ValueError:
            names.append(x509.DNSName(d))
            names.append(x509.DNSName(f"*.{d}"))
    now = datetime.datetime.now(datetime.timezone.utc)
    common_name = next((d for d in sorted(domains) if not d.replace(".", "").replace(":", "").isdigit()), "localhost")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade self-signed")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    tmp_key = key_path.with_suffix(".key.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.with_suffix(".crt.tmp").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(cert_path.with_suffix(".crt.tmp"), cert_path)
    return cert_path, key_path
