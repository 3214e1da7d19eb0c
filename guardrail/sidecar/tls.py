"""`UpstreamTLS`: how `guardrail serve` speaks TLS to an `https://` upstream (docs/configuration.md): the
CA certificates it trusts (`GUARDRAIL_UPSTREAM_CA_FILE`, else certifi's roots), the client certificate it
presents to an upstream that asks for one (mTLS), and the name the upstream's certificate must carry.

The files are read once, at start: one that cannot be used stops the start with `TLSSettingsProblem`,
naming its variable and what it should hold. `describe_tls_error` says why a handshake failed, and what to set.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi

CA_FILE = "GUARDRAIL_UPSTREAM_CA_FILE"
CLIENT_CERT = "GUARDRAIL_UPSTREAM_CLIENT_CERT"
CLIENT_KEY = "GUARDRAIL_UPSTREAM_CLIENT_KEY"
SERVER_NAME = "GUARDRAIL_UPSTREAM_SERVER_NAME"
# OpenSSL's verify results for a certificate that does not name the host: X509_V_ERR_HOSTNAME_MISMATCH,
# X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = (62, 64)
# Alerts an upstream sends when it wants a client certificate, or refuses the one it got.
_CLIENT_CERT_REFUSED = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")


class TLSSettingsProblem(ValueError):
    """A TLS setting that cannot be used: the message names its variable and what it should hold."""


class _Encrypted(Exception):
    pass


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """`ca_file`: PEM CA certificates trusted instead of certifi's roots. `client_cert`: a PEM certificate
    (chain), with its key in the same file or in `client_key`. `server_name`: the name verified in the
    upstream's certificate and sent in SNI, when not the URL's host."""

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    @property
    def configured(self) -> bool:
        return any(value is not None for value in (self.ca_file, self.client_cert, self.client_key, self.server_name))

    def context(self) -> ssl.SSLContext:
        """The client context, or `TLSSettingsProblem`."""
        if self.client_key is not None and self.client_cert is None:
            raise TLSSettingsProblem(f"{CLIENT_KEY} is set without {CLIENT_CERT}: set the certificate too, or neither")
        ca_file = self.ca_file or Path(certifi.where())
        what = "a PEM file of the CA certificates that sign the upstream's certificate"
        _check_readable(ca_file, CA_FILE, what)
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
        except ssl.SSLError as exc:
            problem = f"{CA_FILE}: {ca_file} holds no PEM certificate ({_reason(exc)}); give {what}"
            raise TLSSettingsProblem(problem) from None
        if self.client_cert is not None:
            self._load_client_certificate(context, self.client_cert)
        return context

    def _load_client_certificate(self, context: ssl.SSLContext, certificate: Path) -> None:
        _check_readable(certificate, CLIENT_CERT, "the PEM client certificate the upstream expects")
        if self.client_key is not None:
            _check_readable(self.client_key, CLIENT_KEY, "the PEM private key of the client certificate")
        try:
            context.load_cert_chain(certificate, self.client_key, password=_no_password)
        except _Encrypted:
            raise TLSSettingsProblem(
                f"{CLIENT_KEY if self.client_key else CLIENT_CERT}: the private key is encrypted; "
                "give it unencrypted, in a file only the sidecar can read"
            ) from None
        except ssl.SSLError as exc:
            where = f"{CLIENT_KEY} ({self.client_key})" if self.client_key else f"{CLIENT_CERT} ({certificate})"
            raise TLSSettingsProblem(
                f"{CLIENT_CERT}: no PEM certificate with its private key in {where} ({_reason(exc)}); give the "
                f"certificate in {CLIENT_CERT} and its key in the same file or in {CLIENT_KEY}"
            ) from None


def describe_tls_error(error: ssl.SSLError) -> str:
    """Why a TLS exchange with the upstream failed, and which setting would fix it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        if error.verify_code in _NAME_MISMATCH:
            return (
                f"the upstream's certificate does not name the host ({error.verify_message}); set {SERVER_NAME} "
                "to a name it carries"
            )
        return (
            f"the upstream's certificate is not trusted ({error.verify_message}); set {CA_FILE} to the CA "
            "certificates that sign it"
        )
    reason = _reason(error)
    if any(alert in (error.reason or "") for alert in _CLIENT_CERT_REFUSED):
        return (
            f"the upstream refused the sidecar's client certificate, or wants one ({reason}); set {CLIENT_CERT} "
            f"and {CLIENT_KEY} to a certificate its CA signed"
        )
    if "HANDSHAKE_FAILURE" in (error.reason or ""):  # what TLS 1.2 says for a missing client certificate, too
        return (
            f"the upstream refused the handshake ({reason}); if it wants a client certificate, set {CLIENT_CERT} "
            f"and {CLIENT_KEY} to one its CA signed"
        )
    return reason


def _check_readable(path: Path, variable: str, what: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TLSSettingsProblem(f"{variable}: cannot read {path} ({exc.strerror or exc}); give {what}") from None


def _no_password() -> bytes:
    # Without a callback, OpenSSL would prompt on the terminal for the password of an encrypted key, and a
    # server would hang there.
    raise _Encrypted


def _reason(error: ssl.SSLError) -> str:
    # OpenSSL's reason, as in "tlsv13 alert certificate required", else the whole text.
    return error.reason.lower().replace("_", " ") if error.reason else str(error)
