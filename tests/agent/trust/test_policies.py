"""Certificate policy processing (RFC 5280 6.1): a CA's requireExplicitPolicy, policy mappings
and inhibitAnyPolicy decide whether a signer's path is valid. ``openssl verify -policy_check``
is the independent judge: every path below gets its verdict from both."""

from __future__ import annotations

import itertools
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from agent.errors import AgentError, Code
from agent.trust import validate_signer
from agent.trust.policies import MAX_NODES
from tests.agent.trust.pki import NOW, Authority, authority, issue

SENDER = "toby@redmond.example"
DOMAIN = "receiver.example"
ANY = "2.5.29.32.0"
A, B, C = "2.16.840.1.101.3.2.1.48.1", "2.16.840.1.101.3.2.1.48.2", "2.16.840.1.101.3.2.1.48.3"


def policies(*oids: str) -> tuple[x509.ExtensionType, bool]:
    return x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier(o), None) for o in oids]
    ), False


def constraints(require: int | None = None, inhibit_mapping: int | None = None):
    return x509.PolicyConstraints(require, inhibit_mapping), True


def inhibit_any(skip: int) -> tuple[x509.ExtensionType, bool]:
    return x509.InhibitAnyPolicy(skip), True


def mappings(*pairs: tuple[str, str]) -> tuple[x509.ExtensionType, bool]:
    """policyMappings, which cryptography cannot build: encoded with asn1crypto."""
    der = asn1_x509.PolicyMappings(
        [
            {"issuer_domain_policy": issuer, "subject_domain_policy": subject}
            for issuer, subject in pairs
        ]
    ).dump()
    return x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, der), True


def chain(keys: Any, *layers: list[tuple[x509.ExtensionType, bool]]):
    """A root without policy extensions, intermediates with ``layers[:-1]`` and a leaf bound to
    SENDER with ``layers[-1]``."""
    root = authority("Policy Root", key=keys.root)
    issuer: Authority = root
    intermediates = []
    for index, extensions in enumerate(layers[:-1]):
        issuer = authority(
            f"Policy CA {index}",
            key=keys.intermediate if index % 2 == 0 else keys.other,
            issuer=issuer,
            extra_extensions=extensions,
        )
        intermediates.append(issuer.certificate)
    leaf = issue("Toby", key=keys.leaf, issuer=issuer, emails=[SENDER], extra_extensions=layers[-1])
    return root.certificate, intermediates, leaf


def ours(make_env: Any, root, intermediates, leaf) -> AgentError | None:
    env = make_env(incoming={DOMAIN: [root]})
    try:
        validate_signer(
            leaf, intermediates, sender=SENDER, recipient_domain=DOMAIN, env=env, at=NOW
        )
    except AgentError as exc:
        return exc
    return None


def openssl_accepts(tmp_path: Path, root, intermediates, leaf) -> bool:
    def pem(name: str, certificates) -> str:
        path = tmp_path / name
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
        return str(path)

    # Direct's user-initial-policy-set is anyPolicy; openssl's default is an empty set.
    argv = [
        "openssl",
        "verify",
        "-policy_check",
        "-policy",
        ANY,
        "-CAfile",
        pem("root.pem", [root]),
    ]
    if intermediates:
        argv += ["-untrusted", pem("chain.pem", intermediates)]
    result = subprocess.run(
        [*argv, pem("leaf.pem", [leaf])], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0


CASES = {
    "no constraints, no policies anywhere": ([], []),
    "explicit policy required, the leaf asserts none": ([policies(A), constraints(0)], []),
    "explicit policy required, the same policy throughout": (
        [policies(A), constraints(0)],
        [policies(A)],
    ),
    "explicit policy required, a different policy below": (
        [policies(A), constraints(0)],
        [policies(B)],
    ),
    "explicit policy required, anyPolicy above a named one": (
        [policies(ANY), constraints(0)],
        [policies(B)],
    ),
    "explicit policy required, anyPolicy inhibited above a leaf asserting only anyPolicy": (
        [policies(ANY), constraints(0), inhibit_any(0)],
        [policies(ANY)],
    ),
    "explicit policy required, A mapped to B for a leaf asserting B": (
        [policies(A), constraints(0), mappings((A, B))],
        [policies(B)],
    ),
    "explicit policy required from the leaf on, the leaf asserts none": (
        [policies(A), constraints(1)],
        [],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_named_paths_get_the_verdict_openssl_gives(case, keys, make_env, tmp_path) -> None:
    root, intermediates, leaf = chain(keys, *CASES[case])
    verdict = ours(make_env, root, intermediates, leaf)
    assert (verdict is None) == openssl_accepts(tmp_path, root, intermediates, leaf), verdict
    if verdict is not None:
        assert verdict.code is Code.UNTRUSTED_SIGNER
        assert "polic" in verdict.detail


def test_a_leaf_without_the_policy_its_ca_requires_is_refused_and_says_why(keys, make_env):
    root, intermediates, leaf = chain(keys, [policies(A), constraints(0)], [policies(B)])
    verdict = ours(make_env, root, intermediates, leaf)
    assert verdict is not None and verdict.code is Code.UNTRUSTED_SIGNER
    assert "no certificate policy acceptable" in verdict.detail


def test_the_common_direct_path_is_untouched(keys, make_env) -> None:
    # Policies asserted, nothing required: accepted whatever the leaf asserts (the usual case,
    # which costs no tree at all).
    root, intermediates, leaf = chain(keys, [policies(A)], [policies(B)])
    assert ours(make_env, root, intermediates, leaf) is None


def test_a_mapping_of_any_policy_is_refused(keys, make_env, tmp_path) -> None:
    root, intermediates, leaf = chain(keys, [policies(A), mappings((ANY, B))], [policies(B)])
    verdict = ours(make_env, root, intermediates, leaf)
    assert verdict is not None and "maps anyPolicy" in verdict.detail
    assert not openssl_accepts(tmp_path, root, intermediates, leaf)


def test_a_critical_policy_mapping_is_processed_not_refused_as_unknown(keys, make_env) -> None:
    root, intermediates, leaf = chain(keys, [policies(A), mappings((A, B))], [policies(B)])
    assert ours(make_env, root, intermediates, leaf) is None


def _random_layer(rng: random.Random, *, leaf: bool) -> list[tuple[x509.ExtensionType, bool]]:
    layer = []
    asserted = rng.choice([(), (A,), (B,), (ANY,), (A, B), (C, ANY)])
    if asserted or rng.random() < 0.5:
        layer.append(policies(*asserted) if asserted else policies(A))
    if not leaf:
        if rng.random() < 0.6:
            require, inhibit = rng.choice([0, 1, 2, None]), rng.choice([0, 1, None])
            if require is not None or inhibit is not None:  # one of them must be present
                layer.append(constraints(require, inhibit))
        if rng.random() < 0.4:
            pairs = rng.sample([(A, B), (B, A), (A, C), (C, B), (B, C)], rng.randint(1, 2))
            layer.append(mappings(*pairs))
        if rng.random() < 0.3:
            layer.append(inhibit_any(rng.choice([0, 1])))
    elif rng.random() < 0.2:
        layer.append(constraints(0, None))
    return layer


def test_generated_paths_get_the_verdict_openssl_gives(keys, make_env, tmp_path) -> None:
    rng = random.Random(5280)
    disagreements = []
    refused = 0
    for number in range(60):
        depth = rng.choice([1, 2, 3])
        layers = [_random_layer(rng, leaf=False) for _ in range(depth)]
        layers.append(_random_layer(rng, leaf=True))
        root, intermediates, leaf = chain(keys, *layers)
        verdict = ours(make_env, root, intermediates, leaf)
        refused += verdict is not None
        if (verdict is None) != openssl_accepts(tmp_path, root, intermediates, leaf):
            disagreements.append((number, layers, verdict))
    assert not disagreements
    assert 10 <= refused <= 50  # the sample exercises both verdicts


def test_a_policy_tree_built_to_explode_is_refused_quickly(keys, make_env) -> None:
    # Each CA maps every one of ten policies to all ten: the tree grows tenfold per level.
    oids = [f"1.3.6.1.4.1.99999.{i}" for i in range(10)]
    every = [(i, s) for i, s in itertools.product(oids, oids)]
    layer = [policies(*oids), constraints(0), mappings(*every)]
    root, intermediates, leaf = chain(keys, layer, layer, layer, layer, [policies(*oids)])
    verdict = ours(make_env, root, intermediates, leaf)
    # Refused at the bound (10**4 leaves otherwise), not after building the whole tree.
    assert MAX_NODES < 10**4
    assert verdict is not None and "too many certificate policies" in verdict.detail
