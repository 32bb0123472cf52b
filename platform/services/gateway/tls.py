"""The gateway's own TLS listener: give the app the client certificate the handshake verified.

uvicorn verifies the client certificate (``ssl_cert_reqs=CERT_REQUIRED``, ``ssl_ca_certs``)
but does not pass it to the app. This protocol class adds it in the ASGI TLS extension,
``scope["extensions"]["tls"]["client_cert_chain"] = [<PEM>]``, so the gateway can read the
caller's organisationId. ``python -m ofsre.platform.run gateway`` uses it when
``OFSRE_TLS_CERT_FILE`` is set.
"""

from __future__ import annotations

import ssl

from ..protocol import LimitedHttpProtocol

__all__ = ["PeerCertificateProtocol"]


class PeerCertificateProtocol(LimitedHttpProtocol):
    """The platform's bounded protocol (:mod:`ofsre.platform.protocol`), plus the peer certificate."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # uvicorn's HTTPScope types an extension as dict[object, object].
        self._ofsre_tls: dict[object, object] | None = (
            {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)]} if der else None)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._ofsre_tls is not None:
            self.scope.setdefault("extensions", {})["tls"] = self._ofsre_tls
