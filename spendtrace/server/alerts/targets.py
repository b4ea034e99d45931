"""Where a webhook may point: never at link-local or cloud metadata addresses, loopback and private only when allowed.

A rule's webhook is fetched by the workers (or the app's local exporter) from inside the
deployment, so a URL like ``http://169.254.169.254/latest/meta-data/`` would make them request
the cloud's instance credentials, and ``http://127.0.0.1:8500/...`` would reach services bound
to localhost. ``target_refusal`` decides, on the parsed host with ``ipaddress``:

- link-local (``169.254.0.0/16``, ``fe80::/10``), cloud metadata (``169.254.169.254``,
  ``fd00:ec2::254``, ``100.100.100.200``, ``metadata.google.internal`` ...) and multicast
  addresses: always refused;
- loopback, private, unique-local, shared (CGNAT), reserved and unspecified addresses (anything
  ``ipaddress`` does not call global), and ``localhost`` names: refused unless allowed
  (``allow_private=True``, the rule's ``allow_private_webhook`` parameter, or
  ``SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS=1`` in the process).

Numeric host forms are recognised as the C resolver reads them (``0x7f000001``, ``2130706433``,
``127.1``, ``0177.0.0.1``, ``[::1]``, ``[::ffff:127.0.0.1]``), as are IPv4 addresses embedded in
IPv6 (mapped, 6to4, Teredo, NAT64). A DNS name is checked again at delivery time
(``resolved_refusal``): every address it resolves to must pass.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ALLOW_PRIVATE_ENV", "allow_private_from_env", "resolved_refusal", "target_refusal"]

#: Set to 1 / true / yes / on to let webhooks point at loopback and private addresses.
ALLOW_PRIVATE_ENV = "SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com", "metadata.packet.net",
})
_METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::253", "100.100.100.200",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOW_TO_ALLOW = f"allow it with allow_private=True / --allow-private-webhook / {ALLOW_PRIVATE_ENV}=1"


def allow_private_from_env() -> bool:
    """Whether ``SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS`` allows loopback and private webhook targets here."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _parse_ip(host: str) -> IPAddress | None:
    """The address a numeric host stands for, in any form the C resolver accepts; ``None`` for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone id ("fe80::1%eth0") is not the address
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # 0x7f000001, 2130706433, 127.1, 0177.0.0.1
        except OSError:
            return None
    return None


def _ip_refusal(ip: IPAddress, allow_private: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return _ip_refusal(inner, allow_private)
    if ip in _METADATA_IPS:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if allow_private or ip.is_global:
        return None
    kind = "a loopback" if ip.is_loopback else "the unspecified" if ip.is_unspecified else "a private"
    return f"{ip} is {kind} address ({_HOW_TO_ALLOW})"


def _host(url: str) -> str:
    host = urlsplit(url.strip()).hostname or ""
    return unicodedata.normalize("NFKC", host).lower().rstrip(".")


def target_refusal(url: str, *, allow_private: bool = False) -> str | None:
    """Why ``url``'s host may not receive webhooks (``None``: it may), from the URL alone."""
    host = _host(url)
    if host in _METADATA_NAMES:
        return f"{host} is a cloud metadata host"
    ip = _parse_ip(host)
    if ip is not None:
        return _ip_refusal(ip, allow_private)
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        return f"{host} is a loopback name ({_HOW_TO_ALLOW})"
    return None


Resolver = Callable[..., Sequence[tuple[Any, ...]]]


def resolved_refusal(url: str, *, allow_private: bool = False, resolve: Resolver = socket.getaddrinfo) -> str | None:
    """``target_refusal``, then every address the host's DNS name resolves to now (at delivery time).

    A name that does not resolve is not refused here: the POST fails with the resolver's error.
    """
    reason = target_refusal(url, allow_private=allow_private)
    if reason is not None:
        return reason
    host = _host(url)
    if _parse_ip(host) is not None:
        return None
    try:
        infos = resolve(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        ip = _parse_ip(str(info[4][0]))
        if ip is not None:
            why = _ip_refusal(ip, allow_private)
            if why is not None:
                return f"{host} resolves to {why}"
    return None
