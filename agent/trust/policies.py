"""Certificate policy processing (RFC 5280 sections 6.1.2 to 6.1.5).

Direct asks for no particular policy (the user-initial-policy-set is anyPolicy, and neither
explicit policy nor any inhibit is set at the start), so the outcome of this processing can
only differ from "accept" when a CA in the path demands it: a policyConstraints
requireExplicitPolicy that runs out before the leaf, with a path whose certificates do not
assert a common (or mapped) policy. The Java and .NET reference agents run this processing
through their platforms' PKIX validators; a CA that marks policyConstraints critical expects
every relying party to, and one that does not is owed the same.

No library does it for us: ``cryptography.x509.verification`` does no policy processing, and
our path builder is our own (path.py says why). The valid_policy_tree is kept one depth at a
time, each node pointing to its parent: every step of section 6.1 reads only the nodes of the
current depth and their parents, and the qualifiers are never needed (we ask for no policy, so
nothing is shown to a user).

Hostile certificates can make the tree grow exponentially with the path's length (many
policies mapped to many, OpenSSL's CVE-2023-0464): more than ``MAX_NODES`` nodes fails the
path instead of costing the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from agent.errors import AgentError, Code

ANY_POLICY = "2.5.29.32.0"
MAX_NODES = 1000


@dataclass(eq=False)
class _Node:
    valid: str
    expected: frozenset[str]
    parent: _Node | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Facts:
    """The policy-related extensions of one certificate (None: absent)."""

    policies: tuple[str, ...] | None
    mappings: tuple[tuple[str, str], ...] | None
    require_explicit: int | None
    inhibit_mapping: int | None
    inhibit_any: int | None
    self_issued: bool


def _fail(what: str, why: str) -> AgentError:
    return AgentError(Code.UNTRUSTED_SIGNER, f"{what}: {why}")


def _mappings(
    extension: x509.Extension[x509.ExtensionType], what: str
) -> tuple[tuple[str, str], ...]:
    # cryptography does not decode policyMappings; asn1crypto does.
    value = extension.value
    assert isinstance(value, x509.UnrecognizedExtension)
    try:
        parsed = asn1_x509.PolicyMappings.load(value.value, strict=True)
        return tuple(
            (pair["issuer_domain_policy"].dotted, pair["subject_domain_policy"].dotted)
            for pair in parsed
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise _fail(what, f"malformed policyMappings ({exc})") from None


def _facts(certificate: x509.Certificate, what: str) -> _Facts:
    # The extensions already parsed (path._extensions ran first), so no ValueError here.
    extensions = certificate.extensions
    policies = mappings = None
    require = inhibit_mapping = inhibit_any = None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.CertificatePolicies):
            policies = tuple(dict.fromkeys(p.policy_identifier.dotted_string for p in value))
        elif isinstance(value, x509.PolicyConstraints):
            require = value.require_explicit_policy
            inhibit_mapping = value.inhibit_policy_mapping
        elif isinstance(value, x509.InhibitAnyPolicy):
            inhibit_any = value.skip_certs
        elif extension.oid == ExtensionOID.POLICY_MAPPINGS:
            mappings = _mappings(extension, what)
    return _Facts(
        policies=policies,
        mappings=mappings,
        require_explicit=require,
        inhibit_mapping=inhibit_mapping,
        inhibit_any=inhibit_any,
        self_issued=certificate.issuer == certificate.subject,
    )


class _Tree:
    """The nodes of the valid_policy_tree at the current depth (None: the tree is NULL)."""

    def __init__(self) -> None:
        self.level: list[_Node] | None = [_Node(ANY_POLICY, frozenset({ANY_POLICY}))]
        self._made = 1

    def node(self, valid: str, expected: frozenset[str], parent: _Node | None, what: str) -> _Node:
        self._made += 1
        if self._made > MAX_NODES:
            raise _fail(what, "too many certificate policies to evaluate")
        return _Node(valid, expected, parent)

    def add_depth(self, facts: _Facts, *, inhibit_any: int, last: bool, what: str) -> None:
        """RFC 5280 6.1.3 (d) and (e)."""
        if self.level is None:
            return
        if facts.policies is None:
            self.level = None
            return
        previous = self.level
        below: list[_Node] = []
        for policy in facts.policies:
            if policy == ANY_POLICY:
                continue
            matched = [node for node in previous if policy in node.expected]
            if not matched:
                matched = [node for node in previous if node.valid == ANY_POLICY][:1]
            below.extend(self.node(policy, frozenset({policy}), node, what) for node in matched)
        if ANY_POLICY in facts.policies and (inhibit_any > 0 or (not last and facts.self_issued)):
            for node in previous:
                present = {child.valid for child in below if child.parent is node}
                for value in sorted(node.expected - present):
                    below.append(self.node(value, frozenset({value}), node, what))
        # Nodes above this depth left without children are pruned (6.1.3(d)(3)): nothing
        # below reads them, so dropping the reference to the previous depth is the pruning.
        self.level = below or None

    def map(self, mappings: Sequence[tuple[str, str]], *, allowed: bool, what: str) -> None:
        """RFC 5280 6.1.4 (b)."""
        if self.level is None:
            return
        issuer_policies = list(dict.fromkeys(issuer for issuer, _subject in mappings))
        if not allowed:
            self.level = [node for node in self.level if node.valid not in issuer_policies] or None
            return
        level = self.level
        any_node = next((node for node in level if node.valid == ANY_POLICY), None)
        for issuer in issuer_policies:
            subjects = frozenset(subject for i, subject in mappings if i == issuer)
            nodes = [node for node in level if node.valid == issuer]
            if nodes:
                for node in nodes:
                    node.expected = subjects
            elif any_node is not None:
                level.append(self.node(issuer, subjects, any_node.parent, what))


def check_policies(certificates: Sequence[x509.Certificate], names: Sequence[str]) -> None:
    """RFC 5280 6.1 policy processing of a path (leaf first, trust anchor excluded, as in
    ``path.Path``), with Direct's inputs: any policy, nothing inhibited, nothing explicit."""
    chain = list(zip(reversed(certificates), reversed(names), strict=True))
    facts = [_facts(certificate, what) for certificate, what in chain]
    for (_certificate, what), fact in zip(chain[:-1], facts[:-1], strict=True):
        # 6.1.4 (a), whatever else the path says.
        if fact.mappings and any(ANY_POLICY in pair for pair in fact.mappings):
            raise _fail(what, "policyMappings maps anyPolicy")
    if all(fact.require_explicit is None for fact in facts):
        # explicit_policy starts above the path's length and never reaches 0 without a
        # requireExplicitPolicy, so the tree cannot fail the path: the usual case costs nothing.
        return
    n = len(chain)
    explicit = inhibit_any = mapping = n + 1
    tree = _Tree()
    for i, ((_certificate, what), fact) in enumerate(zip(chain, facts, strict=True), start=1):
        last = i == n
        tree.add_depth(fact, inhibit_any=inhibit_any, last=last, what=what)
        if explicit <= 0 and tree.level is None:  # 6.1.3 (f)
            raise _fail(what, "no certificate policy acceptable to the path's CAs")
        if last:
            break
        if fact.mappings:
            tree.map(fact.mappings, allowed=mapping > 0, what=what)
        if not fact.self_issued:  # 6.1.4 (h)
            explicit, mapping, inhibit_any = (
                max(v - 1, 0) for v in (explicit, mapping, inhibit_any)
            )
        if fact.require_explicit is not None:  # 6.1.4 (i)
            explicit = min(explicit, fact.require_explicit)
        if fact.inhibit_mapping is not None:
            mapping = min(mapping, fact.inhibit_mapping)
        if fact.inhibit_any is not None:  # 6.1.4 (j)
            inhibit_any = min(inhibit_any, fact.inhibit_any)
    # 6.1.5 (a), (b) and the final check; (g) intersects with the user's any-policy: no change.
    explicit = max(explicit - 1, 0)
    if facts[-1].require_explicit == 0:
        explicit = 0
    if explicit <= 0 and tree.level is None:
        raise _fail(chain[-1][1], "no certificate policy acceptable to the path's CAs")
