#!/usr/bin/env python3
"""Verify idgate's identity assertion (X-Idgate-Assertion) in your application, with PyJWT.

    pip install "pyjwt[crypto]"        # or Debian's python3-jwt

The keys come from idgate's JWK set (`https://APP/oauth2/jwks`); PyJWKClient caches them and fetches again when
an assertion names a kid it does not know (a rotation). Check `aud` (your host, or the route's `audience`) and
`iss` (idgate's public origin) as below; `exp` and `iat` are checked by PyJWT.

Try it:  verify.py --jwks https://app.example.com/oauth2/jwks --issuer https://app.example.com \\
             --audience app.example.com "$ASSERTION"
"""
import argparse
import json
import sys

import jwt

ALGORITHMS = ["ES256", "RS256", "PS256"]  # what idgate signs with; never "none" or HS*


def verifier(jwks_url, issuer, audience):
    """A function that returns the verified claims of an assertion, or raises jwt.InvalidTokenError."""
    keys = jwt.PyJWKClient(jwks_url, cache_keys=True)

    def verify(assertion):
        key = keys.get_signing_key_from_jwt(assertion)
        return jwt.decode(
            assertion,
            key.key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            options={"require": ["iss", "aud", "sub", "exp", "iat"]},
        )

    return verify


# In a Flask application:
#   verify = verifier("https://app.example.com/oauth2/jwks", "https://app.example.com", "app.example.com")
#   @app.before_request
#   def who():
#       try:
#           g.user = verify(request.headers["X-Idgate-Assertion"])["sub"]
#       except (KeyError, jwt.InvalidTokenError, jwt.PyJWKClientError):
#           abort(401)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jwks", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--audience", required=True)
    ap.add_argument("assertion")
    args = ap.parse_args()
    try:
        claims = verifier(args.jwks, args.issuer, args.audience)(args.assertion)
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as e:
        print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(claims, sort_keys=True))
