"""Is a model endpoint on this machine? Only then may pseudonymisation be skipped."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

LOCAL_NAMES = frozenset({"localhost", "0.0.0.0", "::"})


def endpoint_host(url: str) -> str:
    return (urlsplit(str(url)).hostname or "").lower()


@lru_cache(maxsize=1)
def _own_addresses() -> frozenset[str]:
    """This machine's addresses: its names resolved, and the one outbound traffic uses."""
    found: set[str] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        found |= _resolve(name)
    try:  # a UDP "connect" sends nothing; it only picks the outbound interface
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 9))
            found.add(probe.getsockname()[0])
    except OSError:
        pass
    return frozenset(found)


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return set()


def _is_local_address(address: str) -> bool:
    try:
        return (
            ipaddress.ip_address(address.split("%")[0]).is_loopback or address in _own_addresses()
        )
    except ValueError:
        return False


def is_on_this_machine(host: str, local_hosts: list[str] | None = None) -> bool:
    """True for loopback, localhost and this machine's own names and addresses. A host that
    does not resolve counts as hosted. `local_hosts`, when given, replaces the check: only
    those hosts are local (an empty list: none, so even loopback is treated as hosted)."""
    host = host.lower().strip("[]")
    if local_hosts is not None:
        return host in {h.lower() for h in local_hosts}
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return True
    addresses = _resolve(host)
    return bool(addresses) and all(_is_local_address(a) for a in addresses)
