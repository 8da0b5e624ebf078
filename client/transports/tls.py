"""TLS for the client: which CA to trust and which certificate to show, for gRPC and HTTPS.

Example:
    >>> from client.api import ServingClient
    >>> from client.transports.tls import TLSFiles
    >>> tls = TLSFiles(ca="ca.pem", cert="client.pem", key="client.key")  # mutual TLS
    >>> with ServingClient.grpc("serving.internal:8500", tls=tls) as client:
    ...     client.status("unet")

`TLSFiles()` with no files is TLS that trusts the system's roots and shows no certificate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import ssl
from pathlib import Path
from typing import Any

import grpc

from client.errors import BAD_INPUT, ClientError

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """Where the client's TLS material lives; the files are read when a transport is made.

    Attributes:
        ca: PEM file of the certificates to trust for the server, or None for the system's
            roots (gRPC's bundled roots for gRPC).
        cert: PEM file of the client certificate (chain) for mutual TLS, or None.
        key: PEM file of `cert`'s private key (unencrypted), or None.
        server_name: The name to check the server's certificate against, when it differs from
            the host dialled (an IP address, a tunnel), or None for the host itself.
    """

    ca: PathLike | None = None
    cert: PathLike | None = None
    key: PathLike | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise ClientError(
                BAD_INPUT,
                f"TLS {given} given without {missing}: a client certificate needs both the "
                "certificate and its private key",
            )

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials: root certificates and, for mutual TLS, the key pair.

        Raises:
            ClientError: BAD_INPUT naming the file that is missing, unreadable or not PEM, or
                a key that does not belong to the certificate.
        """
        # The ssl module checks the files with readable errors; gRPC would only fail the first
        # handshake, as a bare UNAVAILABLE.
        self.ssl_context()
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.ca, "ca"),
            private_key=_read_pem(self.key, "key"),
            certificate_chain=_read_pem(self.cert, "cert"),
        )

    def grpc_options(self) -> list[tuple[str, Any]]:
        """Channel options that go with the credentials (the name override, if any)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def ssl_context(self) -> ssl.SSLContext:
        """A client `ssl.SSLContext` for HTTPS: verifies the server, shows `cert` if given.

        Raises:
            ClientError: BAD_INPUT naming the file that is missing, unreadable or not PEM, or
                a key that does not belong to the certificate.
        """
        if self.ca is None:
            context = ssl.create_default_context()
        else:
            pem = _read_pem(self.ca, "ca").decode("ascii", "replace")
            try:
                # Given roots replace the system's, as root_certificates do for gRPC.
                context = ssl.create_default_context(cadata=pem)
            except ssl.SSLError as error:
                raise ClientError(
                    BAD_INPUT,
                    f"TLS ca file {self.ca} holds no valid certificate ({_reason(error)})",
                ) from None
        if self.cert is not None:
            _read_pem(self.cert, "cert")
            _read_pem(self.key, "key")
            try:
                # The callback keeps OpenSSL from prompting on the terminal for an encrypted key.
                context.load_cert_chain(self.cert, self.key, password=lambda: b"")
            except ssl.SSLError as error:
                raise ClientError(
                    BAD_INPUT,
                    f"TLS cert {self.cert} and key {self.key} do not load as a pair "
                    f"({_reason(error)}); the key must be the certificate's, unencrypted",
                ) from None
        return context


def grpc_channel(target: str, tls: TLSFiles | None, options=()) -> grpc.Channel:
    """A channel to `target`: plaintext for `tls` None, else TLS with its credentials.

    Raises:
        ClientError: BAD_INPUT for a TLS file that is missing or not PEM.
    """
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    credentials = tls.grpc_credentials()
    return grpc.secure_channel(target, credentials, options=[*options, *tls.grpc_options()])


def _read_pem(path: PathLike | None, role: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ClientError(BAD_INPUT, f"TLS {role} file {path} does not exist") from None
    except OSError as error:
        raise ClientError(BAD_INPUT, f"cannot read TLS {role} file {path}: {error}") from None
    if b"-----BEGIN " not in data:
        raise ClientError(
            BAD_INPUT,
            f"TLS {role} file {path} is not PEM (no -----BEGIN line); convert it "
            "with `openssl x509 -inform der` (certificates) or `openssl pkey` (keys)",
        )
    return data


def _reason(error: ssl.SSLError) -> str:
    return error.reason or error.strerror or str(error)


# -- command-line options shared by `python -m client` and `python -m serving.rollout` ---------


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --tls, --ca, --cert, --key and --server-name to `parser`."""
    group = parser.add_argument_group("TLS (any of these turns TLS on)")
    add = group.add_argument
    add("--tls", action="store_true", help="use TLS, trusting the system's root certificates")
    add("--ca", metavar="FILE", help="PEM certificate(s) to trust for the server")
    add("--cert", metavar="FILE", help="PEM client certificate, for mutual TLS (with --key)")
    add("--key", metavar="FILE", help="PEM private key of --cert")
    add("--server-name", metavar="NAME", help="name in the server's certificate, if not HOST")


def tls_from_args(args: argparse.Namespace) -> TLSFiles | None:
    """The TLSFiles the options ask for, or None for plaintext.

    Raises:
        ClientError: BAD_INPUT for --cert without --key or the reverse.
    """
    files = (args.ca, args.cert, args.key, args.server_name)
    if not args.tls and all(value is None for value in files):
        return None
    return TLSFiles(ca=args.ca, cert=args.cert, key=args.key, server_name=args.server_name)
