#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets under fuzz/corpus/<target>/.

The seeds are checked in; this script only regenerates them (it needs the
`cryptography` package). The P-256 and Ed25519 keys are fixed (derived from
constant strings) because the `jws` target knows their public halves as the
accounts `.../acct/1` and `.../acct/2`, and the `csr` target signs with the
P-256 key in its mode 1: print them with `seeds.py --keys`.
"""

import base64
import hashlib
import json
import os
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.x509.oid import NameOID

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
BASE = "https://ca.test/acme"
NONCE = "oFvnlFP1wIhRlYS2jTaXbA"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def fixed_p256():
    d = int.from_bytes(hashlib.sha256(b"tenure-fuzz p256").digest(), "big")
    return ec.derive_private_key(d, ec.SECP256R1())


def fixed_ed25519():
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tenure-fuzz ed25519").digest())


def jwk(key):
    pub = key.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = pub.public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {256: "P-256", 384: "P-384"}[key.curve.key_size]
        return {"kty": "EC", "crv": crv, "x": b64(n.x.to_bytes(size, "big")), "y": b64(n.y.to_bytes(size, "big"))}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    n = pub.public_numbers()
    return {"kty": "RSA", "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64(n.e.to_bytes(3, "big"))}


def alg(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384"}[key.curve.key_size]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return "RS256"


def sign(key, msg):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        h = {256: hashes.SHA256(), 384: hashes.SHA384()}[key.curve.key_size]
        r, s = utils.decode_dss_signature(key.sign(msg, ec.ECDSA(h)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(msg)
    from cryptography.hazmat.primitives.asymmetric import padding

    return key.sign(msg, padding.PKCS1v15(), hashes.SHA256())


def jws(key, url, payload, kid=None, nonce=NONCE):
    header = {"alg": alg(key), "url": url}
    if nonce is not None:
        header["nonce"] = nonce
    if kid:
        header["kid"] = kid
    else:
        header["jwk"] = jwk(key)
    p = b64(json.dumps(header, separators=(",", ":")).encode())
    body = "" if payload is None else b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = sign(key, f"{p}.{body}".encode())
    return json.dumps({"protected": p, "payload": body, "signature": b64(sig)}).encode()


def eab(account_key, url):
    import hmac

    header = b64(json.dumps({"alg": "HS256", "kid": "kid-1", "url": url}).encode())
    payload = b64(json.dumps(jwk(account_key)).encode())
    mac = hmac.new(b"0" * 32, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": header, "payload": payload, "signature": b64(mac)}


def csr(key, cn, sans, ips=()):
    import ipaddress

    names = [x509.DNSName(s) for s in sans] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def cri(der):
    """The certificationRequestInfo TLV of a DER CSR (the first element of the outer SEQUENCE)."""

    def tlv(buf, at):
        n = buf[at + 1]
        if n < 0x80:
            return at + 2, n
        k = n & 0x7F
        return at + 2 + k, int.from_bytes(buf[at + 2 : at + 2 + k], "big")

    start, _ = tlv(der, 0)
    body, length = tlv(der, start)
    return der[start : body + length]


def cert(key):
    import datetime

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    now = datetime.datetime(2026, 1, 1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x4A1F0C)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com")]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    p256, ed = fixed_p256(), fixed_ed25519()
    if "--keys" in sys.argv:
        print("acct/1 (P-256):", json.dumps(jwk(p256)))
        print("acct/2 (Ed25519):", json.dumps(jwk(ed)))
        pkcs8 = p256.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        print("P-256 PKCS#8:", base64.b64encode(pkcs8).decode())
        return
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa2048 = rsa.generate_private_key(65537, 2048)
    ed2 = ed25519.Ed25519PrivateKey.generate()

    # jws: request bodies, signed correctly, for each algorithm and both key references.
    new_account = {"contact": ["mailto:a@example.com"], "termsOfServiceAgreed": True}
    write("jws", "new-account-es256", jws(p256, f"{BASE}/new-account", new_account))
    write("jws", "new-account-es384", jws(p384, f"{BASE}/new-account", new_account))
    write("jws", "new-account-rs256", jws(rsa2048, f"{BASE}/new-account", {"onlyReturnExisting": True}))
    write("jws", "new-account-eddsa", jws(ed2, f"{BASE}/new-account", new_account))
    eab_payload = dict(new_account, externalAccountBinding=eab(p256, f"{BASE}/new-account"))
    write("jws", "new-account-eab", jws(p256, f"{BASE}/new-account", eab_payload))
    order = {"identifiers": [{"type": "dns", "value": "www.example.com"}]}
    write("jws", "new-order-kid1", jws(p256, f"{BASE}/new-order", order, kid=f"{BASE}/acct/1"))
    write("jws", "post-as-get-kid2", jws(ed, f"{BASE}/order/1", None, kid=f"{BASE}/acct/2"))
    write("jws", "no-nonce", jws(ed, f"{BASE}/order/1", {}, kid=f"{BASE}/acct/2", nonce=None))

    # csr: byte 0 even = the rest is a DER CSR; odd = the rest is a certificationRequestInfo
    # the target signs with the fixed P-256 key (so mutations get past the signature).
    write("csr", "p256-sans", b"\x00" + csr(p256, "www.example.com", ["www.example.com", "api.example.com"], ["192.0.2.1", "2001:db8::1"]))
    write("csr", "p384-cn-only", b"\x00" + csr(p384, "solo.example.com", []))
    write("csr", "rsa2048-wildcard", b"\x00" + csr(rsa2048, None, ["*.example.com", "example.com"]))
    write("csr", "ed25519", b"\x00" + csr(ed2, None, ["www.example.com"]))
    write("csr", "cri-sans", b"\x01" + cri(csr(p256, "WWW.Example.com", ["www.example.com", "x.example.org"], ["192.0.2.7"])))
    write("csr", "cri-cn-ip", b"\x01" + cri(csr(p256, "192.0.2.1", [])))

    # payloads: every payload type (the target tries each input as every type).
    write("payloads", "new-account", json.dumps(new_account).encode())
    write("payloads", "new-account-eab", json.dumps(eab_payload).encode())
    write("payloads", "account-update", b'{"status":"deactivated","contact":["mailto:b@example.com"]}')
    write("payloads", "key-change", json.dumps({"account": f"{BASE}/acct/1", "oldKey": jwk(p256)}).encode())
    write(
        "payloads",
        "new-order",
        json.dumps(
            {
                "identifiers": [{"type": "dns", "value": "WWW.Example.com."}, {"type": "ip", "value": "2001:db8::1"}, {"type": "dns", "value": "*.example.com"}],
                "profile": "default",
                "replaces": "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            }
        ).encode(),
    )
    write("payloads", "finalize", json.dumps({"csr": b64(csr(p256, None, ["www.example.com"]))}).encode())
    write("payloads", "challenge", b"{}")
    write("payloads", "authz-deactivate", b'{"status":"deactivated"}')
    write("payloads", "revoke", json.dumps({"certificate": b64(cert(p256)), "reason": 1}).encode())

    # plugin_answer: byte 0 % 4 = 0, 1, 2: the rest is a request for decide-issuance,
    # -renewal, -distribution (HookRequest::from_json); 3: an `arbitrary`-built request
    # and answers (any bytes do).
    requests = os.path.join(os.path.dirname(ROOT), "..", "examples", "tenant-plugin", "requests")
    for i, hook in enumerate(["issuance", "renewal", "distribution"]):
        with open(os.path.join(requests, f"{hook}.json"), "rb") as f:
            write("plugin_answer", f"{hook}.json", bytes([i]) + f.read())
    order_req = {
        "tenant": "corp",
        "account": "acct_1",
        "trigger": "acme-order",
        "identifiers": [{"type": "dns", "value": "a.corp.example"}, {"type": "ip", "value": "192.0.2.1"}],
        "profile": "short",
        "requested-lifetime-seconds": 3600,
    }
    write("plugin_answer", "issuance-order.json", b"\x00" + json.dumps(order_req).encode())
    write("plugin_answer", "arbitrary-1", b"\x03" + hashlib.sha256(b"1").digest() * 4)
    write("plugin_answer", "arbitrary-2", b"\x03" + bytes(range(256)))


if __name__ == "__main__":
    main()
