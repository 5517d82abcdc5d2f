"""notifykit.signing: the signature scheme receivers verify (pure functions, no server)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from notifykit import ConfigError, NotifyKitError
from notifykit.signing import SIGNATURE_HEADER, SignatureError, sign, verify

BODY = b'{"specversion":"1.0","id":"m-1","data":{"size":1}}'
T = 1_700_000_000


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    headers = sign(BODY, "s3cret", timestamp=T)
    expected = hmac.new(b"s3cret", f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers == {SIGNATURE_HEADER: f"t={T},v1={expected}"}


def test_verify_accepts_own_signature_and_returns_timestamp() -> None:
    headers = sign(BODY, "s3cret", timestamp=T)
    assert verify(headers, BODY, "s3cret", now=T + 10) == T


def test_verify_matches_header_name_case_insensitively_and_str_body() -> None:
    headers = {k.lower(): v for k, v in sign(BODY, "s3cret", timestamp=T).items()}
    assert verify(headers, BODY.decode(), "s3cret", now=T) == T


@pytest.mark.parametrize(
    "body",
    [BODY.replace(b'"size":1', b'"size":2'), BODY + b" ", b""],
    ids=["changed-value", "trailing-space", "empty"],
)
def test_tampered_body_is_refused(body: bytes) -> None:
    headers = sign(BODY, "s3cret", timestamp=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify(headers, body, "s3cret", now=T)


def test_wrong_secret_is_refused() -> None:
    headers = sign(BODY, "s3cret", timestamp=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify(headers, BODY, "other", now=T)


def test_changed_timestamp_is_refused() -> None:
    value = sign(BODY, "s3cret", timestamp=T)[SIGNATURE_HEADER].replace(f"t={T}", f"t={T + 1}")
    with pytest.raises(SignatureError, match="does not match"):
        verify({SIGNATURE_HEADER: value}, BODY, "s3cret", now=T)


def test_expired_and_future_timestamps_are_refused() -> None:
    headers = sign(BODY, "s3cret", timestamp=T)
    assert verify(headers, BODY, "s3cret", tolerance=300, now=T + 300) == T
    with pytest.raises(SignatureError, match="301s old"):
        verify(headers, BODY, "s3cret", tolerance=300, now=T + 301)
    with pytest.raises(SignatureError, match="in the future"):
        verify(headers, BODY, "s3cret", tolerance=60, now=T - 61)


def test_missing_and_malformed_headers_are_refused() -> None:
    with pytest.raises(SignatureError, match="no Notifykit-Signature header"):
        verify({"Content-Type": "application/json"}, BODY, "s3cret", now=T)
    with pytest.raises(SignatureError, match="no timestamp"):
        verify({SIGNATURE_HEADER: "v1=abc"}, BODY, "s3cret", now=T)
    with pytest.raises(SignatureError, match="malformed timestamp"):
        verify({SIGNATURE_HEADER: "t=soon,v1=abc"}, BODY, "s3cret", now=T)
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify({SIGNATURE_HEADER: f"t={T},v0=abc"}, BODY, "s3cret", now=T)
    with pytest.raises(SignatureError, match="does not match"):
        verify({SIGNATURE_HEADER: f"t={T},v1=é"}, BODY, "s3cret", now=T)


def test_key_rotation_sender_signs_with_both_receiver_accepts_either() -> None:
    headers = sign(BODY, ["old-key", "new-key"], timestamp=T)
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    assert verify(headers, BODY, "old-key", now=T) == T
    assert verify(headers, BODY, "new-key", now=T) == T
    # A receiver that already rotated accepts a sender that has not yet, and vice versa.
    assert verify(sign(BODY, "old-key", timestamp=T), BODY, ["new-key", "old-key"], now=T) == T
    with pytest.raises(SignatureError):
        verify(headers, BODY, ["third-key"], now=T)


def test_errors_never_show_the_secret_or_the_expected_signature() -> None:
    headers = sign(BODY, "hunter2-very-secret", timestamp=T)
    digest = headers[SIGNATURE_HEADER].split("v1=")[1]
    for body, now in ((BODY + b"x", T), (BODY, T + 10_000)):
        with pytest.raises(SignatureError) as info:
            verify(headers, body, "hunter2-very-secret", now=now)
        assert "hunter2" not in str(info.value)
        assert digest not in str(info.value)
    assert issubclass(SignatureError, NotifyKitError)


def test_empty_secret_and_negative_tolerance_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="secret must be a non-empty"):
        sign(BODY, "")
    with pytest.raises(ConfigError, match="secret must be a non-empty"):
        verify(sign(BODY, "k", timestamp=T), BODY, [], now=T)
    with pytest.raises(ConfigError, match="tolerance"):
        verify(sign(BODY, "k", timestamp=T), BODY, "k", tolerance=-1, now=T)


def test_cloudevents_binary_headers_are_signed_too() -> None:
    ce = {"ce-id": "m-1", "ce-type": "backup.create.end", "ce-source": "backup.host1", "Content-Type": "application/json"}
    data = b'{"size":1}'
    signature = sign(data, "k", timestamp=T, headers=ce)
    received = {**{k.upper() if k.startswith("ce-") else k: v for k, v in ce.items()}, **signature, "X-Proxy": "added"}
    assert verify(received, data, "k", now=T) == T  # header case and unrelated headers do not matter
    for name, forged in (("ce-type", "backup.delete.end"), ("ce-source", "evil"), ("ce-subject", "new")):
        with pytest.raises(SignatureError, match="does not match"):
            verify({**ce, **signature, name: forged}, data, "k", now=T)
    without = {k: v for k, v in ce.items() if k != "ce-id"}
    with pytest.raises(SignatureError, match="does not match"):
        verify({**without, **signature}, data, "k", now=T)


def test_without_ce_headers_the_scheme_is_plain_timestamp_dot_body() -> None:
    plain = sign(BODY, "k", timestamp=T, headers={"Content-Type": "application/cloudevents+json"})
    assert plain == sign(BODY, "k", timestamp=T)
