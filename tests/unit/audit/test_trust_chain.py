"""The signing key pinned by the anchor topic: the first key anchors, later keys only through a
rotation the chain's key signed."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.domain.chain import key_id, rotate, sign, trust_chain

K1, K2, K3 = (Ed25519PrivateKey.generate() for _ in range(3))


def kid(k: Ed25519PrivateKey) -> str:
    return key_id(k.public_key())


def test_the_first_key_is_pinned_and_a_rotation_hands_the_chain_on() -> None:
    entries = [
        (sign(K1, 100, "a"), K1.public_key()),
        (rotate(K1, K2.public_key()), None),
        (sign(K2, 200, "b"), K2.public_key()),
    ]
    keys, problems = trust_chain(entries, {}, signer=kid(K2))
    assert problems == [] and set(keys) == {kid(K1), kid(K2)}


def test_a_key_swapped_without_a_rotation_is_refused_whatever_the_configuration_trusts() -> None:
    entries = [(sign(K1, 100, "a"), K1.public_key()), (sign(K2, 200, "b"), K2.public_key())]
    configured = {kid(K2): K2.public_key()}  # what the swapped key file makes "trusted"
    _, problems = trust_chain(entries, configured, signer=kid(K2))
    assert any(f"key {kid(K2)} signs anchored checkpoints" in p for p in problems)
    assert any(f"the signing key {kid(K2)} is not the chain's key" in p for p in problems)


def test_a_rotation_signed_by_a_stranger_introduces_nobody() -> None:
    entries = [(sign(K1, 100, "a"), K1.public_key()), (rotate(K3, K2.public_key()), None)]
    keys, problems = trust_chain(entries, {}, signer=kid(K1))
    assert set(keys) == {kid(K1)} and problems and "not signed by a key" in problems[0]


def test_an_old_anchor_without_its_public_key_is_pinned_from_the_configured_keys() -> None:
    entries = [(sign(K1, 100, "a"), None)]
    assert trust_chain(entries, {kid(K1): K1.public_key()}, kid(K1)) == (
        {kid(K1): K1.public_key()}, [],
    )  # fmt: skip
    _, problems = trust_chain(entries, {}, kid(K1))
    assert problems == [f"the chain's first key {kid(K1)} is not a known key"]


def test_a_new_chain_is_handed_on_and_the_old_one_still_verifies_with_its_own_key() -> None:
    entries = [
        (sign(K1, 100, "a"), K1.public_key()),
        (rotate(K1, K2.public_key(), new_chain=True), None),
        (sign(K2, 100, "other"), K2.public_key()),  # the new database's own row 100
        (sign(K1, 200, "b"), K1.public_key()),  # the old projection goes on
    ]
    new, problems = trust_chain(entries, {}, signer=kid(K2))
    assert problems == [] and set(new) == {kid(K2)}  # K1's anchors are the old database's
    old, problems = trust_chain(entries, {}, signer=kid(K1))
    assert problems == [] and set(old) == {kid(K1)}
