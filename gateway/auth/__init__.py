"""Tokens: JWT verification for connect and subscribe (:mod:`.verifier`) and JWKS key sets
(:mod:`.jwks`). Pure apart from the JWKS fetcher thread, which is injected."""

from gateway.auth.verifier import *  # noqa: F403
from gateway.auth.verifier import __all__  # noqa: F401
