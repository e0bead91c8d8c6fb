"""Verifies access tokens against the server's published JWKS with PyJWT's PyJWKClient, as an
independent verifier would: the key found by the token's kid, the algorithm the key names,
the issuer required. Usage: pyjwt_jwks.py ISSUER TOKEN...; prints each token's subject."""

import sys

import jwt

issuer, tokens = sys.argv[1], sys.argv[2:]
client = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json")
for token in tokens:
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256", "EdDSA"],
        issuer=issuer,
        options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub"]},
    )
    print(claims["sub"])
