#!/usr/bin/env python3
"""The PyJWT side of the interop tests in tests/service_to_service.rs.

PyJWT is an independent JWT implementation: tokens minted by our TokenSigner must verify
in it, and tokens it signs must verify with our KeySet.

Requires: pip install pyjwt cryptography

    python3 tests/interop/pyjwt_interop.py verify < cases.json
        cases: [{"token", "jwks" (path of a JWKS file), "issuer", "audience"}, ...]
        prints [{"ok": true, "header": {...}, "claims": {...}}
                or {"ok": false, "error": "ExceptionName: message"}, ...]
        The key is chosen by the token's kid; its JWK's alg is the only one allowed.

    python3 tests/interop/pyjwt_interop.py sign < cases.json
        cases: [{"pem" (path of a PKCS#8 PEM file), "alg", "kid", "claims"}, ...]
        prints [{"token": "..."}, ...]

Exits 3 with a message on stderr when PyJWT or cryptography is missing, 2 on bad usage.
"""
import json
import sys

try:
    import jwt
    import cryptography  # noqa: F401  PyJWT needs it for RSA, EC and EdDSA keys
except ImportError as e:
    sys.stderr.write(f"pyjwt_interop: {e}; install with: pip install pyjwt cryptography\n")
    sys.exit(3)

REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti"]


def verify(case):
    with open(case["jwks"]) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    try:
        header = jwt.get_unverified_header(case["token"])
        key = jwks[header["kid"]]
        claims = jwt.decode(
            case["token"],
            key,
            algorithms=[key.algorithm_name],
            issuer=case["issuer"],
            audience=case["audience"],
            options={"require": REQUIRED},
        )
    except (jwt.PyJWTError, KeyError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "header": header, "claims": claims}


def sign(case):
    with open(case["pem"], "rb") as f:
        pem = f.read()
    token = jwt.encode(case["claims"], pem, algorithm=case["alg"], headers={"kid": case["kid"]})
    return {"token": token}


def main():
    commands = {"verify": verify, "sign": sign}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.stderr.write("usage: pyjwt_interop.py verify|sign < cases.json\n")
        sys.exit(2)
    cases = json.load(sys.stdin)
    json.dump([commands[sys.argv[1]](case) for case in cases], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
