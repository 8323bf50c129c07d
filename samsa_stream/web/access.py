"""Who may view the page and who may send prompts from it (web.token, web.view_requires_token,
web.allow_prompts_from). Pure decisions: each returns None when allowed, else the reason to show."""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from ..errors import CommandError
from ..settings import WebSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Access:
    """The access rules of one server, from its settings."""

    def __init__(self, cfg: WebSettings) -> None:
        self.token = cfg.token
        self.view_requires_token = cfg.view_requires_token
        try:
            self.networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in cfg.allow_prompts_from]
        except ValueError as exc:
            raise CommandError(f"web.allow_prompts_from: {exc}") from None
        if self.view_requires_token and self.token is None:
            raise CommandError("web.view_requires_token is set but web.token is not: nobody could view the page")

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the configured token (compared in constant time)."""
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def allowed_address(self, remote: str | None) -> bool:
        """Whether ``remote`` (the client's IP address) lies in web.allow_prompts_from."""
        try:
            address = ipaddress.ip_address((remote or "").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.0.0.5 is the IPv4 client 10.0.0.5
        return any(address in net for net in self.networks)

    def view_refusal(self, given: str | None) -> str | None:
        """Why the page (or its data) may not be viewed with token ``given``; None when it may."""
        if not self.view_requires_token or self.token_ok(given):
            return None
        if not given:
            return "this display needs the access token to be viewed (open the page as /?token=...)"
        return "the access token given is not this display's token"

    def prompt_refusal(self, remote: str | None, given: str | None) -> str | None:
        """Why a client at ``remote`` with token ``given`` may not send prompts; None when it may."""
        if self.token_ok(given) or self.allowed_address(remote):
            return None
        if given:
            return "the access token given is not this display's token: clicks are not sent"
        if self.token is None:
            return (f"prompts are accepted only from {', '.join(map(str, self.networks)) or 'no address'} "
                    f"(web.allow_prompts_from) and this client is {remote}; no token is configured")
        return (f"prompts from {remote} need the access token (open the page as /?token=...); "
                "viewing works without it")


def origin_refusal(origin: str | None, host: str | None) -> str | None:
    """Why a WebSocket with this Origin header may not connect: a page served by another site (another
    origin) must not drive the worker through a browser that can reach this server. None when allowed
    (no Origin: not a browser, or the same host and port)."""
    if origin is None:
        return None
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or host is None:
        return f"WebSocket from origin {origin!r} refused: only pages served by this display may connect"
    if parts.netloc.lower() != host.lower():
        return f"WebSocket from origin {origin!r} refused: only pages served by this display ({host}) may connect"
    return None


__all__ = ["Access", "origin_refusal"]
