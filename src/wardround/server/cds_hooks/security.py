"""Trusting CDS Clients: the EHR's signed JWT, checked as CDS Hooks 2.0 asks.

Every call (discovery, a service, feedback) carries `Authorization: Bearer <JWT>`, signed
with an asymmetric key from the issuer's JWK Set; `aud` is the URL of the endpoint called;
`iss`, `aud`, `exp`, `iat` and `jti` are required, and a `jti` is accepted once.

Only configured issuers are trusted, each with the JWKS URL agreed out of band: a `jku`
header naming any other URL is refused rather than fetched (fetching it would let a token
choose the key that verifies it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

__all__ = ["ASYMMETRIC_ALGS", "CdsAuthError", "ClientVerifier", "JtiCache"]

# HMAC ("HS*") and "none" are refused by the specification; these are what PyJWT verifies
# with a public key. The public CDS Hooks sandbox signs with ES256.
ASYMMETRIC_ALGS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384")
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


class CdsAuthError(Exception):
    """The request's JWT was missing or not acceptable; the message says why (sent as a 401)."""


class JtiCache:
    """Each (issuer, jti) seen, kept until its token expires, so a replay is refused."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        """True the first time this jti is presented (before `expires_at`), False after."""
        now = time.time()
        with self._lock:
            if now >= self._next_purge:  # drop expired entries now and then, not every call
                self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
                self._next_purge = now + 60
            key = (issuer, jti)
            if self._seen.get(key, 0.0) > now:
                return False
            self._seen[key] = expires_at
            return True


class ClientVerifier:
    """Verifies CDS Clients' JWTs against their issuers' JWK Sets.

    Args:
        issuers: trusted `iss` -> the URL of its JWK Set.
        algorithms: the signature algorithms accepted (asymmetric only).
        leeway_s: clock skew allowed on `exp` and `iat`.
    """

    def __init__(
        self,
        issuers: Mapping[str, str],
        *,
        algorithms: Iterable[str] = ASYMMETRIC_ALGS,
        leeway_s: float = 30.0,
    ) -> None:
        self.algorithms = [a for a in algorithms if a in ASYMMETRIC_ALGS]
        self.leeway_s = leeway_s
        self.replays = JtiCache()
        self._jwks_urls = {iss.rstrip("/"): url for iss, url in issuers.items()}
        # PyJWKClient caches the key set and refetches it for an unknown kid (key rotation).
        self._keys = {
            iss: PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
            for iss, url in self._jwks_urls.items()
        }

    async def verify(self, authorization: str | None, audiences: list[str]) -> dict[str, Any]:
        """The claims of the bearer JWT in an `Authorization` header value; raises
        CdsAuthError naming what is wrong."""
        token = _bearer(authorization)
        header = _header(token)
        issuer = _claimed_issuer(token)
        keys = self._keys.get(issuer.rstrip("/"))
        if keys is None:
            none = "" if self._keys else " (none is: set WARDROUND_CDS_TRUSTED_ISSUERS)"
            raise CdsAuthError(f"issuer {issuer!r} is not trusted by this CDS service{none}")
        jku = header.get("jku")
        if jku and jku != self._jwks_urls[issuer.rstrip("/")]:
            raise CdsAuthError(f"jku {jku!r} is not the JWK Set registered for {issuer!r}")
        # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
        key = await asyncio.to_thread(_signing_key, keys, header["kid"], issuer)
        claims = self._decode(token, key, header["alg"], audiences, issuer)
        # Kept while the token could still pass the expiry check (exp plus the leeway).
        until = float(claims["exp"]) + self.leeway_s
        if not self.replays.claim(issuer, str(claims["jti"]), until):
            raise CdsAuthError("this JWT's jti was already used (replay refused)")
        return claims

    def _decode(
        self, token: str, key: Any, alg: str, audiences: list[str], issuer: str
    ) -> dict[str, Any]:
        if alg not in self.algorithms:
            raise CdsAuthError(f"alg {alg!r} is not accepted; use one of {self.algorithms}")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audiences,
                issuer=issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise CdsAuthError("the JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise CdsAuthError(f"the JWT's aud must be {audiences[0]}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise CdsAuthError(f"the JWT has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise CdsAuthError(
                "the JWT's signature does not verify with the issuer's key"
            ) from None
        except jwt.ImmatureSignatureError:
            raise CdsAuthError("the JWT is not valid yet (iat or nbf in the future)") from None
        except jwt.InvalidTokenError as exc:
            raise CdsAuthError(f"the JWT is invalid: {exc}") from None


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CdsAuthError("send the CDS Client's JWT as Authorization: Bearer <JWT>")
    return token.strip()


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise CdsAuthError("the bearer token is not a JWT") from None
    if header.get("alg") in (None, "none") or str(header.get("alg")).startswith("HS"):
        raise CdsAuthError("the JWT must be signed with an asymmetric key (not none or HMAC)")
    if not header.get("kid"):
        raise CdsAuthError("the JWT header has no kid naming the signing key")
    return header


def _claimed_issuer(token: str) -> str:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        raise CdsAuthError("the JWT's payload is not readable") from None
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise CdsAuthError("the JWT has no 'iss' claim")
    return issuer


def _signing_key(keys: PyJWKClient, kid: str, issuer: str) -> Any:
    try:
        return keys.get_signing_key(kid).key
    except PyJWKClientConnectionError as exc:
        raise CdsAuthError(f"the JWK Set of {issuer!r} could not be fetched: {exc}") from None
    except PyJWKClientError:
        raise CdsAuthError(f"no key {kid!r} in the JWK Set of {issuer!r}") from None
