"""`aws-waf` against moto's WAFv2 server on 127.0.0.1 (a real HTTP endpoint speaking the WAFv2 API).

moto enforces lock tokens on UpdateIPSet (a stale token gets WAFOptimisticLockException, and every
update issues a new token), so the conflict test changes the set for real between the enforcer's
read and its write instead of faking the error. Dummy credentials and a region are always set, and
the metadata service is disabled, so boto3 never looks for a real account.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mlguard.decisions.policy import Policy, parse_networks
from mlguard.decisions.store import DecisionStore
from mlguard.errors import EnforcerError, UsageError

try:
    import boto3
    from botocore.exceptions import ClientError
    from moto.server import ThreadedMotoServer  # noqa: F401 - checked here, used by moto_server
except ImportError:  # the `test` extra brings them; CI must not skip this file
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 and moto[server] are not installed", allow_module_level=True)

from mlguard.enforcers.aws_waf import MAX_ENTRIES, AwsWafEnforcer
from tests.moto_server import moto_endpoint

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_endpoint(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture(scope="module")
def waf(endpoint: str) -> Any:
    return boto3.client("wafv2", endpoint_url=endpoint, region_name="us-east-1")


def new_set(
    waf: Any, name: str, version: int = 4, scope: str = "REGIONAL", addresses: list[str] | None = None
) -> dict:
    made = waf.create_ip_set(
        Name=name,
        Scope=scope,
        Description="MLGuard blocks",
        IPAddressVersion=f"IPV{version}",
        Addresses=addresses or [],
    )
    return made["Summary"]


def ref(summary: dict) -> str:
    return f"{summary['Name']}/{summary['Id']}"


def read(waf: Any, summary: dict, scope: str = "REGIONAL") -> tuple[set[str], str, str]:
    found = waf.get_ip_set(Name=summary["Name"], Scope=scope, Id=summary["Id"])
    return set(found["IPSet"]["Addresses"]), found["LockToken"], found["IPSet"].get("Description", "")


def record(store: DecisionStore, rows: list[tuple[str, float]], when: datetime) -> None:
    frame = pl.DataFrame(
        {
            "client": [c for c, _ in rows],
            "verdict": ["block"] * len(rows),
            "score": [s for _, s in rows],
            "reasons": [["many 404s"]] * len(rows),
        }
    )
    store.record(frame, when)


def test_blocks_land_in_their_set_and_leave_on_unblock_and_expiry(
    tmp_path: Path, waf: Any, endpoint: str
) -> None:
    # Someone else's address is in the v4 set (MLGuard owns the set: it goes), and the v6 set
    # already holds both wanted addresses in the expanded form AWS may return: equal as networks,
    # so that set is not written.
    expanded = ["2a01:04f8:1c1c:0000:0000:0000:0000:0007/128", "2a01:04f8:1c1c:0000:0000:0000:0000:0008/128"]
    v4 = new_set(waf, "mlguard-v4", 4, addresses=["81.2.69.250/32"])
    v6 = new_set(waf, "mlguard-v6", 6, addresses=expanded)
    store = DecisionStore(tmp_path / "state.db")
    record(
        store,
        [
            ("81.2.69.160", 0.9),
            ("2a01:4f8:1c1c::7", 0.95),
            ("2a01:4f8:1c1c::8", 0.85),
            ("::ffff:81.2.69.162", 0.8),  # IPv4-mapped: an IPv4 client
            ("10.0.0.9", 0.99),  # private: never blocked
            ("fe80::1", 0.99),  # link-local: never blocked
            ("81.2.69.161", 0.97),  # allowlisted below
        ],
        T0,
    )
    store.record(
        pl.DataFrame({"client": ["81.2.69.170"], "verdict": ["alert"], "score": [0.6], "reasons": [[]]}), T0
    )
    store.block("81.2.70.0/24", T0, "seen in our WAF")  # a person's range block: kept as a CIDR
    policy = Policy(allow=parse_networks(["81.2.69.161"]))
    enforcer = AwsWafEnforcer(ipv4_set=ref(v4), ipv6_set=ref(v6), endpoint_url=endpoint, policy=policy)
    assert enforcer.healthcheck() is None
    _, token6, _ = read(waf, v6)

    pending = {d.client for d in enforcer.pending(store.list())}
    assert pending == {"81.2.69.160", "::ffff:81.2.69.162", "81.2.70.0/24"}
    result = enforcer.sync(store.list())
    assert (result.sent, result.unchanged, result.failed) == (3, 2, 0), result.messages
    addresses4, token4, description = read(waf, v4)
    assert addresses4 == {"81.2.69.160/32", "81.2.69.162/32", "81.2.70.0/24"}
    assert description == "MLGuard blocks"
    assert read(waf, v6)[:2] == (set(expanded), token6)
    assert result.messages == ["aws-waf IP set mlguard-v4: 3 entries blocked, 3 added, 1 released"]

    # Unchanged: no update call at all (an update would have issued new lock tokens).
    again = enforcer.sync(store.list())
    assert (again.sent, again.unchanged, again.failed, again.messages) == (0, 5, 0, [])
    assert read(waf, v4)[1] == token4 and read(waf, v6)[1] == token6
    assert enforcer.pending(store.list()) == []

    store.unblock("81.2.69.160", "customer called")
    released = enforcer.sync(store.list())
    assert released.failed == 0 and "81.2.69.160/32" not in read(waf, v4)[0]
    assert read(waf, v6)[1] == token6  # the v6 set did not change, so it was not written

    store.expire(T0 + timedelta(hours=5))  # every block had the first-offence TTL of 4 hours
    gone = enforcer.sync(store.list())
    assert (gone.sent, gone.unchanged, gone.failed) == (0, 0, 0)
    assert read(waf, v4)[0] == set() and read(waf, v6)[0] == set()
    enforcer.close()
    store.close()


class Meddler:
    """The real client, except that before each of the first `times` updates another writer
    changes the set (so the lock token the enforcer read is stale), and it notes AWS's errors."""

    def __init__(self, real: Any, times: int) -> None:
        self.real, self.times = real, times
        self.updates = 0
        self.sent: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def get_ip_set(self, **kwargs: Any) -> Any:
        return self.real.get_ip_set(**kwargs)

    def update_ip_set(self, **kwargs: Any) -> Any:
        self.updates += 1
        self.sent.append(kwargs)
        where = {k: kwargs[k] for k in ("Name", "Scope", "Id")}
        if self.times:
            self.times -= 1
            token = self.real.get_ip_set(**where)["LockToken"]
            self.real.update_ip_set(**where, Addresses=["81.2.69.250/32"], LockToken=token)
        try:
            return self.real.update_ip_set(**kwargs)
        except ClientError as exc:
            self.errors.append(exc.response["Error"]["Code"])
            raise


def test_a_lock_token_conflict_is_read_again_and_retried(tmp_path: Path, waf: Any) -> None:
    v4 = new_set(waf, "mlguard-lock", 4)
    store = DecisionStore(tmp_path / "state.db")
    record(store, [("81.2.69.160", 0.9)], T0)
    waits: list[float] = []
    meddler = Meddler(waf, times=1)
    enforcer = AwsWafEnforcer(ipv4_set=ref(v4), client=meddler, sleep=waits.append)
    result = enforcer.sync(store.list())
    assert meddler.errors == ["WAFOptimisticLockException"] and meddler.updates == 2 and waits == [0.5]
    assert (result.sent, result.failed) == (1, 0)
    # AWS's UpdateIPSet replaces every mutable field (moto keeps an omitted description, AWS
    # erases it), so the description read must be sent back with each update.
    assert [call["Description"] for call in meddler.sent] == ["MLGuard blocks"] * 2
    assert read(waf, v4)[0] == {"81.2.69.160/32"}  # the other writer's address was read, then replaced

    # A set that never stops changing: bounded attempts, then a message and a failed count.
    record(store, [("81.2.69.161", 0.9)], T0)
    waits.clear()
    always = Meddler(waf, times=99)
    stubborn = AwsWafEnforcer(ipv4_set=ref(v4), client=always, attempts=3, sleep=waits.append)
    lost = stubborn.sync(store.list())
    assert always.updates == 3 and waits == [0.5, 1.0]
    assert lost.failed == 2 and lost.sent == 0 and "(lock token conflict) in 3 attempt(s)" in lost.messages[0]
    assert read(waf, v4)[0] == {"81.2.69.250/32"}  # both blocks wait: neither is in the set
    store.close()


def test_the_size_limit_keeps_the_most_severe_and_says_how_many_were_left_out(
    tmp_path: Path, waf: Any
) -> None:
    v4 = new_set(waf, "mlguard-limit", 4)
    store = DecisionStore(tmp_path / "state.db")
    scores = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87]
    record(store, [(f"81.2.69.{i}", s) for i, s in enumerate(scores, 1)], T0)
    enforcer = AwsWafEnforcer(ipv4_set=ref(v4), client=waf, max_entries=5)
    result = enforcer.sync(store.list())
    assert read(waf, v4)[0] == {f"81.2.69.{i}/32" for i in (4, 5, 6, 7, 8)}
    assert (result.sent, result.failed) == (5, 0)
    assert any("at most 5 entries: 3 less severe block(s) left out" in m for m in result.messages)
    assert len(enforcer.pending(store.list())) == 0  # the left-out ones are not pending: they cannot go

    # A person's block outranks every score; at equal scores the more recent block wins.
    record(store, [("81.2.69.9", 0.84)], T0 + timedelta(minutes=1))  # ties 81.2.69.5, later
    store.block("81.2.69.100", T0 + timedelta(minutes=2), "seen in our WAF")
    assert {d.client for d in enforcer.pending(store.list())} == {"81.2.69.100", "81.2.69.9"}
    result = enforcer.sync(store.list())
    assert read(waf, v4)[0] == {f"81.2.69.{i}/32" for i in (100, 8, 7, 6, 9)}
    assert any("5 less severe block(s) left out" in m for m in result.messages)
    store.close()


def test_the_real_limit_of_10000_entries(tmp_path: Path, waf: Any) -> None:
    v4 = new_set(waf, "mlguard-10k", 4)
    store = DecisionStore(tmp_path / "state.db")
    # 10,003 public addresses in 81.2.0.0/16; the three lowest scores must be the ones left out.
    rows = [(f"81.2.{i // 250}.{i % 250 + 1}", 0.8 + i / 1e6) for i in range(MAX_ENTRIES + 3)]
    record(store, rows, T0)
    enforcer = AwsWafEnforcer(ipv4_set=ref(v4), client=waf)
    started = time.monotonic()
    result = enforcer.sync(store.list())
    assert time.monotonic() - started < 10
    held = read(waf, v4)[0]
    assert len(held) == MAX_ENTRIES and result.sent == MAX_ENTRIES
    assert not held & {f"{client}/32" for client, _ in rows[:3]}
    assert any("at most 10000 entries: 3 less severe" in m for m in result.messages)
    store.close()


def test_aws_unreachable_or_without_credentials_is_a_message_not_a_traceback(
    tmp_path: Path, endpoint: str, waf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DecisionStore(tmp_path / "state.db")
    record(store, [("81.2.69.160", 0.9), ("2a01:4f8:1c1c::7", 0.9)], T0)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    name_id = "mlguard/2b3c4d5e-0000-4000-8000-000000000000"
    down = AwsWafEnforcer(
        ipv4_set=name_id,
        ipv6_set="mlguard6/2b3c4d5e-0000-4000-8000-000000000001",
        endpoint_url=f"http://127.0.0.1:{closed}",
        attempts=1,
        timeout_secs=1,
    )
    started = time.monotonic()
    result = down.sync(store.list())
    assert (result.sent, result.failed) == (0, 2) and len(result.messages) == 2
    assert "aws-waf IP set mlguard (REGIONAL)" in result.messages[0]
    assert "Could not connect" in result.messages[0]
    assert "Could not connect" in (down.healthcheck() or "")
    with pytest.raises(EnforcerError, match="Could not connect"):
        down.pending(store.list())
    assert time.monotonic() - started < 5

    v4 = new_set(waf, "mlguard-nocreds", 4)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    nobody = AwsWafEnforcer(ipv4_set=ref(v4), endpoint_url=endpoint)
    result = nobody.sync(store.list())
    assert result.failed == 1 and result.messages == [
        "1 IPv6 block(s) not enforced: no IPv6 IP set given (--aws-waf-ipv6-set)",
        "aws-waf IP set mlguard-nocreds (REGIONAL): no AWS credentials found (environment, profile or role)",
    ]
    store.close()


def test_sets_by_arn_scopes_and_mistakes(tmp_path: Path, waf: Any, endpoint: str) -> None:
    store = DecisionStore(tmp_path / "state.db")
    record(store, [("81.2.69.160", 0.9), ("2a01:4f8:1c1c::7", 0.9)], T0)
    regional, cloudfront = new_set(waf, "mlguard-arn", 4), new_set(waf, "mlguard-cf", 4, scope="CLOUDFRONT")
    assert ":regional/ipset/" in regional["ARN"] and ":global/ipset/" in cloudfront["ARN"]
    by_arn = AwsWafEnforcer(ipv4_set=regional["ARN"], endpoint_url=endpoint)
    assert by_arn.scope == "REGIONAL" and by_arn.sync(store.list()).sent == 1
    assert read(waf, regional)[0] == {"81.2.69.160/32"}
    global_set = AwsWafEnforcer(ipv4_set=cloudfront["ARN"], endpoint_url=endpoint)
    assert global_set.scope == "CLOUDFRONT" and global_set.client.meta.region_name == "us-east-1"
    assert global_set.sync(store.list()).sent == 1
    assert read(waf, cloudfront, scope="CLOUDFRONT")[0] == {"81.2.69.160/32"}
    # by name/id, the scope must be given for a CLOUDFRONT set; without it the REGIONAL one is looked up
    wrong_scope = AwsWafEnforcer(ipv4_set=ref(cloudfront), endpoint_url=endpoint)
    assert "WAFNonexistentItemException: check its name, id, scope and region" in (
        wrong_scope.healthcheck() or ""
    )
    assert (
        AwsWafEnforcer(ipv4_set=ref(cloudfront), scope="cloudfront", endpoint_url=endpoint).healthcheck()
        is None
    )

    # An IPv6 set given as the IPv4 one is reported, and nothing is written to it.
    v6 = new_set(waf, "mlguard-swapped", 6)
    swapped = AwsWafEnforcer(ipv4_set=ref(v6), client=waf)
    assert "holds IPV6 addresses but was given as --aws-waf-ipv4-set" in (swapped.healthcheck() or "")
    assert swapped.sync(store.list()).failed == 1 and read(waf, v6)[0] == set()

    for bad, match in [
        ({"ipv4_set": "blocklist"}, "is not NAME/ID"),
        ({"ipv4_set": "mlguard/not-an-id"}, "is not NAME/ID"),
        ({"ipv4_set": ref(regional), "scope": "global"}, "expected one of: REGIONAL, CLOUDFRONT"),
        ({"ipv4_set": regional["ARN"], "scope": "CLOUDFRONT"}, "contradicts the IP set ARN"),
        ({"ipv4_set": cloudfront["ARN"], "region": "eu-west-1"}, "contradicts the IP set ARN"),
        ({"ipv4_set": ref(cloudfront), "scope": "CLOUDFRONT", "region": "eu-west-1"}, "managed in us-east-1"),
        ({"ipv4_set": regional["ARN"], "ipv6_set": cloudfront["ARN"]}, "different scopes"),
        ({"ipv4_set": ref(regional), "max_entries": MAX_ENTRIES + 1}, "between 1 and 10000"),
    ]:
        with pytest.raises(UsageError, match=match):
            AwsWafEnforcer(**bad, client=waf)
    store.close()


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'mlguard-web\[aws\]'"):
        AwsWafEnforcer(ipv4_set="mlguard/2b3c4d5e-0000-4000-8000-000000000000")
