"""`aws-waf`: keep an AWS WAF (WAFv2) IP set equal to the active blocks, with boto3.

MLGuard owns the IP set: give it a set of its own (one for IPv4 and, optionally, one for IPv6)
and reference it from a block rule in your web ACL. Each sync makes the set hold exactly the
active block decisions (an address as /32 or /128, a range as its CIDR) and nothing else, so
expired and unblocked clients leave it and a protected client (private, loopback, allowlisted,
trusted proxy) never enters it. The set is read with GetIPSet and written with UpdateIPSet and the
lock token that read returned, only when its content differs; when someone else changed it in
between (WAFOptimisticLockException) it is read again and the update retried with backoff.

An IP set holds at most 10,000 entries: when there are more blocks, the most severe are kept (a
person's block first, then the highest score, then the most recent) and the result says how many
were left out. AWS errors (denied, unknown set, no credentials, endpoint unreachable) become
messages and a failed count; the decisions stay in the store for the next sync.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlguard.decisions.policy import Network, Policy, client_network
from mlguard.decisions.store import Decision
from mlguard.enforcers import SyncResult
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

SCOPES = ("REGIONAL", "CLOUDFRONT")
MAX_ENTRIES = 10_000  # AWS WAF: an IP set holds up to 10,000 addresses or ranges
CLOUDFRONT_REGION = "us-east-1"  # AWS: CLOUDFRONT-scope calls go to us-east-1
_NAME_ID = re.compile(r"^(?P<name>[\w-]{1,128})/(?P<id>[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})$")
_ARN = re.compile(
    r"^arn:aws[\w-]*:wafv2:(?P<region>[a-z0-9-]+):\d{12}:(?P<kind>regional|global)/ipset/"
    r"(?P<name>[\w-]{1,128})/(?P<id>[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12})$"
)
_MISSING_BOTO3 = "the aws-waf enforcer needs boto3: pip install 'mlguard-web[aws]'"


@dataclass(frozen=True)
class IPSetRef:
    """One IP set as WAFv2 addresses it, and the IP version it must hold."""

    name: str
    id: str
    version: int  # 4 or 6
    option: str  # the option it came from, for messages
    scope: str | None = None  # from an ARN
    region: str | None = None  # from an ARN

    @property
    def label(self) -> str:
        return f"IP set {self.name}"


def parse_ip_set(value: str, version: int, option: str) -> IPSetRef:
    """`NAME/ID` or an IP set ARN (`arn:aws:wafv2:REGION:ACCOUNT:regional|global/ipset/NAME/ID`)."""
    text = value.strip()
    if found := _ARN.match(text):
        scope = "CLOUDFRONT" if found["kind"] == "global" else "REGIONAL"
        return IPSetRef(found["name"], found["id"], version, option, scope, found["region"])
    if found := _NAME_ID.match(text):
        return IPSetRef(found["name"], found["id"], version, option)
    raise UsageError(
        f"{option} '{safe_text(value, 200)}' is not NAME/ID (the IP set's name and id) or an IP set "
        "ARN (arn:aws:wafv2:REGION:ACCOUNT:regional/ipset/NAME/ID)"
    )


def _cidr(network: Network) -> str:
    return network.with_prefixlen


def _normalise(address: str) -> str:
    """AWS returns what it was given (IPv6 may come back expanded): compare networks, not text."""
    try:
        return _cidr(ipaddress.ip_network(address.strip(), strict=False))
    except ValueError:
        return address  # not ours and not an address: it differs from every wanted entry, so it goes


def _severity(decision: Decision) -> tuple[float, str, int]:
    # A person's block (no score) was a deliberate call: it outranks every detector score.
    score = math.inf if decision.score is None else decision.score
    return (score, decision.created, decision.id)


class _PushError(EnforcerError):
    """A failed push, with the set's content when it was read before the failure."""

    def __init__(self, error: EnforcerError, before: set[str] | None) -> None:
        super().__init__(str(error))
        self.before = before


@dataclass
class _Plan:
    """What one IP set should hold: entry -> the decision it stands for, most severe first."""

    wanted: dict[str, Decision]
    left_out: int


class AwsWafEnforcer:
    name = "aws-waf"
    blocks = True

    def __init__(
        self,
        ipv4_set: str,
        ipv6_set: str | None = None,
        scope: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        policy: Policy | None = None,
        max_entries: int = MAX_ENTRIES,
        attempts: int = 4,
        backoff_secs: float = 0.5,
        timeout_secs: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        client: Any = None,
    ) -> None:
        self.sets = [parse_ip_set(ipv4_set, 4, "--aws-waf-ipv4-set")]
        if ipv6_set:
            self.sets.append(parse_ip_set(ipv6_set, 6, "--aws-waf-ipv6-set"))
        self.scope = self._scope(scope)
        if not 1 <= max_entries <= MAX_ENTRIES:
            raise UsageError(f"--aws-waf-max-entries {max_entries} must be between 1 and {MAX_ENTRIES}")
        if attempts < 1:
            raise UsageError(f"--aws-waf-attempts {attempts} must be at least 1")
        self.policy = policy or Policy()
        self.max_entries, self.attempts, self.backoff_secs = max_entries, attempts, backoff_secs
        self._sleep = sleep
        region = self._region(region)  # checked even with an injected client
        self._owns_client = client is None
        self.client = client if client is not None else self._client(region, endpoint_url, timeout_secs)

    def _scope(self, scope: str | None) -> str:
        from_arns = {s.scope for s in self.sets if s.scope is not None}
        if len(from_arns) > 1:
            raise UsageError("the IPv4 and IPv6 IP set ARNs name different scopes; both must be one scope")
        if scope is not None:
            scope = scope.upper()
            if scope not in SCOPES:
                raise UsageError(
                    f"--aws-waf-scope '{safe_text(scope, 20)}'; expected one of: {', '.join(SCOPES)}"
                )
            if from_arns and scope not in from_arns:
                raise UsageError(f"--aws-waf-scope {scope} contradicts the IP set ARN ({from_arns.pop()})")
            return scope
        return from_arns.pop() if from_arns else "REGIONAL"

    def _region(self, region: str | None) -> str | None:
        from_arns = {s.region for s in self.sets if s.region is not None}
        if len(from_arns) > 1:
            raise UsageError("the IPv4 and IPv6 IP set ARNs name different regions; both must be one region")
        if region is None:
            region = from_arns.pop() if from_arns else None
        elif from_arns and region not in from_arns:
            raise UsageError(
                f"--aws-region {safe_text(region, 40)} contradicts the IP set ARN ({from_arns.pop()})"
            )
        if self.scope == "CLOUDFRONT":
            if region not in (None, CLOUDFRONT_REGION):
                raise UsageError(
                    f"CLOUDFRONT IP sets are managed in {CLOUDFRONT_REGION}, not {safe_text(region, 40)}; "
                    "drop --aws-region or give us-east-1"
                )
            region = CLOUDFRONT_REGION
        return region  # None: boto3's own (AWS_REGION, AWS_DEFAULT_REGION, the profile)

    def _client(self, region: str | None, endpoint_url: str | None, timeout_secs: float) -> Any:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise UsageError(_MISSING_BOTO3) from None
        # botocore retries throttling, 5xx and connection errors itself; lock conflicts are ours.
        config = Config(
            connect_timeout=timeout_secs,
            read_timeout=timeout_secs,
            retries={"mode": "standard", "total_max_attempts": self.attempts},
        )
        try:
            # A session of its own: the default one caches credentials for the whole process.
            session = boto3.session.Session()
            return session.client("wafv2", region_name=region, endpoint_url=endpoint_url, config=config)
        except BotoCoreError as exc:  # NoRegionError, a malformed endpoint URL
            raise UsageError(
                f"cannot set up the AWS WAF client: {safe_text(exc, 200)}; give --aws-region"
            ) from None

    # Planning: pure, no AWS calls.

    def _plans(self, decisions: list[Decision]) -> tuple[dict[int, _Plan], list[str]]:
        """For each configured IP version, the entries the set should hold; and notes."""
        best: dict[int, dict[str, Decision]] = {4: {}, 6: {}}
        for d in decisions:
            if d.verdict != "block" or d.state != "active" or self.policy.protection(d.client) is not None:
                continue
            network = client_network(d.client)
            if network is None or network.prefixlen == 0:  # WAF rejects /0, and it would block everyone
                continue
            entry, chosen = _cidr(network), best[network.version]
            if entry not in chosen or _severity(d) > _severity(chosen[entry]):
                chosen[entry] = d
        plans, notes = {}, []
        for ref in self.sets:
            ranked = sorted(best[ref.version].items(), key=lambda item: _severity(item[1]), reverse=True)
            kept = dict(ranked[: self.max_entries])
            plans[ref.version] = _Plan(kept, len(ranked) - len(kept))
        if 6 not in plans and best[6]:
            notes.append(
                f"{len(best[6])} IPv6 block(s) not enforced: no IPv6 IP set given (--aws-waf-ipv6-set)"
            )
        return plans, notes

    # Talking to AWS.

    def _problem(self, ref: IPSetRef, exc: Exception) -> EnforcerError:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"aws-waf {ref.label} ({self.scope})"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, text = str(error.get("Code", "error")), safe_text(error.get("Message", ""), 200)
            if code == "WAFNonexistentItemException":
                hint = "check its name, id, scope and region"
            elif code in ("AccessDeniedException", "UnauthorizedOperation"):
                hint = "the credentials need wafv2:GetIPSet and wafv2:UpdateIPSet on it"
            else:
                hint = text or "no detail"
            return EnforcerError(f"{where}: {safe_text(code, 80)}: {hint}")
        if isinstance(exc, NoCredentialsError):
            return EnforcerError(f"{where}: no AWS credentials found (environment, profile or role)")
        return EnforcerError(f"{where}: {safe_text(exc, 200)}")

    def _read(self, ref: IPSetRef) -> tuple[set[str], str, str | None]:
        """The set's entries (normalised), its lock token and its description."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self.client.get_ip_set(Name=ref.name, Scope=self.scope, Id=ref.id)
        except (BotoCoreError, ClientError) as exc:
            raise self._problem(ref, exc) from None
        ip_set = found["IPSet"]
        version = ip_set.get("IPAddressVersion")
        if version != f"IPV{ref.version}":
            raise EnforcerError(
                f"aws-waf {ref.label} holds {safe_text(version, 10)} addresses but was given as {ref.option}"
            )
        addresses = {_normalise(a) for a in ip_set.get("Addresses", [])}
        return addresses, found["LockToken"], ip_set.get("Description") or None

    def _push(self, ref: IPSetRef, wanted: set[str]) -> tuple[set[str], bool]:
        """Make the set hold `wanted`: what it held before, and whether it was written."""
        from botocore.exceptions import BotoCoreError, ClientError

        before: set[str] | None = None
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.backoff_secs * 2 ** (attempt - 1))
            try:
                current, token, description = self._read(ref)
            except EnforcerError as exc:
                raise _PushError(exc, before) from None
            before = current
            if current == wanted:
                return current, False
            # UpdateIPSet replaces every mutable field: send the description back, or it is erased.
            extra = {"Description": description} if description else {}
            try:
                self.client.update_ip_set(
                    Name=ref.name,
                    Scope=self.scope,
                    Id=ref.id,
                    Addresses=sorted(wanted),
                    LockToken=token,
                    **extra,
                )
                return current, True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "WAFOptimisticLockException":
                    raise _PushError(self._problem(ref, exc), before) from None
            except BotoCoreError as exc:
                raise _PushError(self._problem(ref, exc), before) from None
        conflict = EnforcerError(
            f"aws-waf {ref.label} ({self.scope}) kept changing under MLGuard (lock token conflict) "
            f"in {self.attempts} attempt(s); is something else writing to it? MLGuard needs a set of its own"
        )
        raise _PushError(conflict, before)

    # The enforcer interface.

    def pending(self, decisions: list[Decision]) -> list[Decision]:
        """The blocks a sync would add (within the size limit); reads the sets (EnforcerError
        when AWS cannot be reached, as a dry run cannot say what is there)."""
        plans, _ = self._plans(decisions)
        out: list[Decision] = []
        for ref in self.sets:
            current, _, _ = self._read(ref)
            out += [d for entry, d in plans[ref.version].wanted.items() if entry not in current]
        return sorted(out, key=lambda d: d.id)

    def sync(self, decisions: list[Decision]) -> SyncResult:
        plans, notes = self._plans(decisions)
        result = SyncResult(messages=notes)
        for ref in self.sets:
            plan = plans[ref.version]
            wanted = set(plan.wanted)
            if plan.left_out:
                result.messages.append(
                    f"aws-waf {ref.label} holds at most {self.max_entries} entries: {plan.left_out} "
                    f"less severe block(s) left out (they stay in the store and enter as others expire)"
                )
            try:
                before, written = self._push(ref, wanted)
            except _PushError as exc:
                # Entries already in the set stay enforced; the rest wait for the next sync (and
                # when the set could not even be read, every wanted entry counts as waiting).
                known = exc.before if exc.before is not None else set()
                result.unchanged += len(wanted & known)
                result.failed += len(wanted - known)
                result.messages.append(str(exc))
                continue
            result.unchanged += len(wanted & before)
            result.sent += len(wanted - before)
            if written:
                result.messages.append(
                    f"aws-waf {ref.label}: {len(wanted)} entries blocked, "
                    f"{len(wanted - before)} added, {len(before - wanted)} released"
                )
        return result

    def healthcheck(self) -> str | None:
        for ref in self.sets:
            try:
                self._read(ref)
            except EnforcerError as exc:
                return str(exc)
        return None

    def close(self) -> None:
        if self._owns_client and hasattr(self.client, "close"):
            self.client.close()
