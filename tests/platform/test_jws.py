"""ofsre.platform.jws: PS256 JWS as FAPI-BR specifies, each refusal with its documented status.

Pure unit tests (no app): keys are real RSA keys, tokens are real PyJWT output, and every
hostile token below is built the way an attacker would build it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from ofsre.platform.jws import (
    BadSignature,
    InvalidClaims,
    JwsConfig,
    KeyDirectory,
    MemoryReplayGuard,
    SigningKey,
    Verifier,
    body_of,
)

AUD = "https://bank.example/open-banking/payments/v4/consents"


@pytest.fixture(scope="module")
def keys():
    return {"org-a": SigningKey.generate(kid="a-1"), "org-b": SigningKey.generate(kid="b-1")}


@pytest.fixture
def directory(tmp_path, keys):
    d = KeyDirectory(tmp_path / "jwks", recheck_s=0)
    for org, key in keys.items():
        d.publish(org, key)
    return d


@pytest.fixture
def verifier(directory):
    return Verifier(directory, replay=MemoryReplayGuard())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _swap_payload(token: str, claims: dict) -> str:
    header, _, signature = token.split(".")
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


def test_a_valid_message_is_accepted_and_its_body_returned(keys, verifier):
    token = keys["org-a"].sign({"data": {"amount": "10.00"}}, iss="org-a", aud=AUD)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "PS256", "kid": "a-1", "typ": "JWT"}
    claims = verifier.verify(token, audience=AUD, issuer="org-a")
    assert body_of(claims) == {"data": {"amount": "10.00"}}
    assert uuid.UUID(claims["jti"]).version == 4 and abs(claims["iat"] - time.time()) < 5


def test_the_tokens_own_iss_chooses_the_jwks_when_the_transport_names_no_organisation(keys, verifier):
    token = keys["org-b"].sign({"data": {}}, iss="org-b", aud=AUD)
    assert verifier.verify(token, audience=AUD)["iss"] == "org-b"


def test_a_tampered_body_is_bad_signature(keys, verifier):
    token = keys["org-a"].sign({"data": {"amount": "10.00"}}, iss="org-a", aud=AUD)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["data"]["amount"] = "99999.00"
    with pytest.raises(BadSignature) as refused:
        verifier.verify(_swap_payload(token, claims), audience=AUD, issuer="org-a")
    assert (refused.value.status, refused.value.code) == (400, "BAD_SIGNATURE")


def test_a_key_the_issuer_never_registered_is_bad_signature(keys, verifier):
    """org-b signs with its own (registered) key but claims to be org-a: not one of org-a's keys."""
    forged = jwt.encode({"data": {}, "iss": "org-a", "aud": AUD, "iat": int(time.time()),
                         "jti": str(uuid.uuid4())},
                        keys["org-b"].private_key, algorithm="PS256", headers={"kid": "a-1"})
    with pytest.raises(BadSignature, match="does not match"):
        verifier.verify(forged, audience=AUD, issuer="org-a")
    unknown = SigningKey.generate(kid="nobody").sign({"data": {}}, iss="org-a", aud=AUD)
    with pytest.raises(BadSignature, match="not a registered key"):
        verifier.verify(unknown, audience=AUD, issuer="org-a")


def test_a_message_from_another_organisation_than_the_transport_says_is_refused(keys, verifier):
    token = keys["org-b"].sign({"data": {}}, iss="org-b", aud=AUD)
    with pytest.raises(BadSignature):  # org-a's JWKS has no b-1
        verifier.verify(token, audience=AUD, issuer="org-a")


@pytest.mark.parametrize("skew", [-61, 61, -3600])
def test_iat_outside_60_seconds_is_invalid_client(keys, verifier, skew):
    token = keys["org-a"].sign({"data": {}}, iss="org-a", aud=AUD, iat=int(time.time()) + skew)
    with pytest.raises(InvalidClaims) as refused:
        verifier.verify(token, audience=AUD, issuer="org-a")
    assert (refused.value.status, refused.value.code) == (403, "INVALID_CLIENT")


def test_a_replayed_jti_is_invalid_client(keys, verifier):
    token = keys["org-a"].sign({"data": {}}, iss="org-a", aud=AUD)
    verifier.verify(token, audience=AUD, issuer="org-a")
    with pytest.raises(InvalidClaims, match="already used") as refused:
        verifier.verify(token, audience=AUD, issuer="org-a")
    assert refused.value.status == 403


def test_alg_none_and_algorithm_confusion_are_bad_signature(keys, verifier):
    claims = {"data": {}, "iss": "org-a", "aud": AUD, "iat": int(time.time()), "jti": str(uuid.uuid4())}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "a-1"})
    with pytest.raises(BadSignature, match="alg must be PS256"):
        verifier.verify(unsigned, audience=AUD, issuer="org-a")
    # HS256 keyed with the public key's JWK text: the classic RS/HS confusion
    header = _b64(json.dumps({"alg": "HS256", "kid": "a-1", "typ": "JWT"}).encode())
    confused = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'x' * 32)}"
    with pytest.raises(BadSignature, match="alg must be PS256"):
        verifier.verify(confused, audience=AUD, issuer="org-a")
    rs256 = jwt.encode(claims, keys["org-a"].private_key, algorithm="RS256", headers={"kid": "a-1"})
    with pytest.raises(BadSignature, match="alg must be PS256"):
        verifier.verify(rs256, audience=AUD, issuer="org-a")


@pytest.mark.parametrize("raw", [b"", b"{\"data\": {}}", b"not.a.jws", b"a.b", b"\xff\xfe.\x00.\x01"])
def test_anything_but_a_compact_jws_is_bad_signature(verifier, raw):
    with pytest.raises(BadSignature):
        verifier.verify(raw, audience=AUD, issuer="org-a")


def test_wrong_audience_or_issuer_claim_is_invalid_client(keys, verifier):
    other_endpoint = keys["org-a"].sign({"data": {}}, iss="org-a",
                                        aud=AUD.replace("consents", "pix/payments"))
    with pytest.raises(InvalidClaims, match="aud"):
        verifier.verify(other_endpoint, audience=AUD, issuer="org-a")
    # signed by org-a's key, but the iss claim names org-b
    lying = keys["org-a"].sign({"data": {}}, iss="org-b", aud=AUD)
    with pytest.raises(InvalidClaims, match="iss"):
        verifier.verify(lying, audience=AUD, issuer="org-a")


def test_missing_claims_and_a_non_uuid4_jti_are_invalid_client(keys, verifier):
    no_jti = jwt.encode({"iss": "org-a", "aud": AUD, "iat": int(time.time())}, keys["org-a"].private_key,
                        algorithm="PS256", headers={"kid": "a-1"})
    with pytest.raises(InvalidClaims, match="jti"):
        verifier.verify(no_jti, audience=AUD, issuer="org-a")
    bad_jti = keys["org-a"].sign({}, iss="org-a", aud=AUD, jti="1234")
    with pytest.raises(InvalidClaims, match="UUID"):
        verifier.verify(bad_jti, audience=AUD, issuer="org-a")


def test_directory_refuses_names_that_leave_its_folder(tmp_path, keys):
    d = KeyDirectory(tmp_path)
    assert d.keys("../etc/passwd") == {} and d.keys(".hidden") == {} and d.keys("") == {}
    with pytest.raises(ValueError):
        d.publish("../escape", keys["org-a"])


def test_publish_keeps_the_other_keys_and_private_parts_never_count(tmp_path, keys):
    d = KeyDirectory(tmp_path, recheck_s=0)
    d.publish("org-a", keys["org-a"])
    rotated = SigningKey.generate(kid="a-2")
    d.publish("org-a", rotated)
    assert set(d.keys("org-a")) == {"a-1", "a-2"}
    assert "d" not in json.loads((tmp_path / "org-a.json").read_text())["keys"][0]
    (tmp_path / "org-c.json").write_text(json.dumps({"keys": [keys["org-a"].private_jwk()]}))
    assert d.keys("org-c") == {}  # a JWKS with a private key is not a directory entry


def test_the_platform_key_is_created_once_and_published(tmp_path):
    config = JwsConfig.from_env({"OFSRE_DATA_DIR": str(tmp_path)})
    first = config.platform_key()
    again = config.platform_key()
    assert first.kid == again.kid
    assert oct(config.key_file.stat().st_mode & 0o777) == "0o600"
    assert set(KeyDirectory(config.jwks_dir).keys("ofsre-bank")) == {first.kid}
    token = first.sign({"data": {}}, iss="ofsre-bank", aud="org-a")
    assert Verifier(KeyDirectory(config.jwks_dir)).verify(token, audience="org-a")["iss"] == "ofsre-bank"


def test_a_read_only_key_directory_is_read_not_written(tmp_path, keys, monkeypatch, caplog):
    """As the Helm chart mounts them: the platform's key from a Secret, the participants' JWKS from a
    ConfigMap, both read-only. The platform starts with its key, warns that its public half is not in
    the folder, and verifies a participant from it."""
    import errno

    import ofsre.platform.jws as jws

    key_file = tmp_path / "secret" / "platform-key.json"
    key_file.parent.mkdir()
    key_file.write_text(json.dumps(SigningKey.generate(kid="bank-1").private_jwk()))
    jwks = tmp_path / "configmap"
    KeyDirectory(jwks).publish("org-a", keys["org-a"])

    def read_only(path, text, mode=0o644):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(jws, "_atomic_write", read_only)
    before = sorted(p.name for p in jwks.iterdir())
    config = JwsConfig.from_env({"OFSRE_JWS_KEY_FILE": str(key_file), "OFSRE_JWKS_DIR": str(jwks),
                                 "OFSRE_DATA_DIR": str(tmp_path / "data")})
    with caplog.at_level("WARNING", logger="ofsre.platform.jws"):
        assert config.platform_key().kid == "bank-1"
    assert "bank-1" in caplog.text and "Read-only file system" in caplog.text
    assert sorted(p.name for p in jwks.iterdir()) == before
    token = keys["org-a"].sign({"data": {}}, iss="org-a", aud=AUD)
    assert Verifier(KeyDirectory(jwks)).verify(token, audience=AUD, issuer="org-a")["iss"] == "org-a"


def test_replicas_starting_together_agree_on_one_platform_key(tmp_path):
    """Several payments replicas create the missing key at once: the first link wins, all load it."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "jws" / "platform-key.json"
    with ThreadPoolExecutor(8) as pool:
        kids = set(pool.map(lambda _: SigningKey.load_or_create(path).kid, range(16)))
    assert len(kids) == 1 and sorted(p.name for p in path.parent.iterdir()) == ["platform-key.json"]


def test_a_detached_signature_covers_the_exact_bytes(keys, directory):
    body = b'{"errors":[{"code":"BAD_SIGNATURE","title":"t","detail":"d"}]}'
    signature = keys["org-a"].sign_detached(body, iss="org-a", aud="org-b")
    header = Verifier(directory).verify_detached(signature, body, audience="org-b", issuer="org-a")
    assert header["alg"] == "PS256" and header["iss"] == "org-a" and uuid.UUID(header["jti"]).version == 4
    with pytest.raises(BadSignature):
        Verifier(directory).verify_detached(signature, body.replace(b"BAD", b"OK_"), audience="org-b",
                                            issuer="org-a")
    with pytest.raises(InvalidClaims):
        Verifier(directory).verify_detached(signature, body, audience="org-c", issuer="org-a")
