"""The decision store in DynamoDB, for the Lambda function: the same decisions, with the same
rules, as the SQLite store (mlguard.decisions.store), so that TTLs and a person's "allow" hold
across invocations that share nothing but this table.

- `record(findings, now)` stores the detector's alerts and blocks: a client already under an
  active decision of the same verdict (or under a block) has it refreshed (score, reasons,
  expiry), never repeated; a block supersedes an active alert; blocks last 4 h, doubling for
  each earlier block of the client up to 7 days; alerts 24 h. Allowed clients get nothing.
- `allow(value, now, reason)` is a person's call that persists: it revokes the client's (or the
  range's) active alerts and blocks, and from then on it is never recorded or blocked again.
- `expire(now)` ends the decisions whose TTL passed.

One table, keys `pk` and `sk` (strings):

    pk = "client#<address or range>", sk = "decision#<id, 20 digits>"   a decision
    pk = "client#<address or range>", sk = "head"                       the client's version
    pk = "object#<bucket>/<key>#<version>", sk = "processed"            an S3 object's mark

Decisions carry `state` and `id`, the keys of the global secondary index `state-id` (how the
active ones are listed). Every change to one client's decisions is one transaction that also
bumps the client's `head` version, with the version read as its condition: two invocations
deciding about one client at once cannot both create a decision (the second retries and
refreshes instead). Items carry `delete_after` (epoch seconds), the table's TTL attribute:
ended decisions are kept MLGUARD_HISTORY_DAYS for the repeat-offender count, then DynamoDB
deletes them; allow entries without a TTL are kept for good.

A secondary index is read eventually consistently, so what this store object wrote is laid over
what the index returns: an invocation always sees its own decisions.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from mlguard.decisions.policy import ALERT, BLOCK, Network, client_network, parse_networks
from mlguard.decisions.store import (
    ACTIVE,
    ALERT_TTL,
    ALLOW,
    BLOCK_TTL,
    DETECTOR,
    EXPIRED,
    MAX_BLOCK_TTL,
    PERSON,
    REVOKED,
    Decision,
)
from mlguard.errors import MLGuardError

STATE_INDEX = "state-id"
DONE, WORKING = "done", "working"
MAX_ATTEMPTS = 8  # per client, when another invocation changes its decisions meanwhile
MAX_EXPIRED_PER_TRANSACTION = 50
RECORD_THREADS = 8  # DynamoDB allows 100 items in one transaction


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _attr(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, list):
        return {"L": [_attr(v) for v in value]}
    return {"S": str(value)}


def _value(attr: dict[str, Any]) -> Any:
    kind, value = next(iter(attr.items()))
    if kind == "NULL":
        return None
    if kind == "N":
        return float(value) if any(c in value for c in ".eE") else int(value)
    if kind == "L":
        return [_value(v) for v in value]
    return value


def _client_key(client: str) -> str:
    return f"client#{client}"


def _decision_key(client: str, decision_id: int) -> dict[str, Any]:
    return {"pk": {"S": _client_key(client)}, "sk": {"S": f"decision#{decision_id:020d}"}}


def _decision(item: dict[str, Any]) -> Decision:
    v = {name: _value(attr) for name, attr in item.items()}
    score = v.get("score")
    return Decision(
        int(v["id"]),
        v["client"],
        v["verdict"],
        None if score is None else float(score),
        list(v.get("reasons") or []),
        v.get("campaign"),
        v["created"],
        v.get("expires"),
        v["origin"],
        v["state"],
        v.get("note"),
    )


def _update(
    key: dict[str, Any], values: dict[str, Any], condition: str | None = None, **condition_values: Any
) -> dict[str, Any]:
    """An UpdateItem (or a transaction's Update) setting `values`; every name goes through an
    expression attribute name, so reserved words (state, status, ...) need no care."""
    names = {f"#{name}": name for name in values}
    updates = {f":{name}": _attr(value) for name, value in values.items()}
    update: dict[str, Any] = {
        "Key": key,
        "UpdateExpression": "SET " + ", ".join(f"#{n} = :{n}" for n in values),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": updates,
    }
    if condition is not None:
        update["ConditionExpression"] = condition
        for name in condition_values:
            names[f"#{name}"] = name
        updates.update({f":c_{name}": _attr(value) for name, value in condition_values.items()})
    return update


class DynamoDecisionStore:
    """Decisions in the DynamoDB table `table`, through the boto3 DynamoDB client `client`."""

    def __init__(
        self, table: str, client: Any, history: timedelta = timedelta(days=30), threads: int = 8
    ) -> None:
        self.table = table
        self.threads = threads  # clients recorded at a time
        self.client = client
        self.history = history
        # what this object wrote (client, id): read-your-writes over the index
        self._seen: dict[tuple[str, int], Decision] = {}

    # Reading

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator(operation).paginate(TableName=self.table, **kwargs):
            yield from page.get("Items", [])

    def list(self, *, state: str | None = ACTIVE, verdict: str | None = None) -> list[Decision]:
        if state is None:
            items = self._pages(
                "scan",
                FilterExpression="begins_with(sk, :d)",
                ExpressionAttributeValues={":d": {"S": "decision#"}},
            )
        else:
            items = self._pages(
                "query",
                IndexName=STATE_INDEX,
                KeyConditionExpression="#state = :state",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":state": {"S": state}},
            )
        found = {(d.client, d.id): d for d in map(_decision, items)}
        found.update(self._seen)
        return sorted(
            (
                d
                for d in found.values()
                if (state is None or d.state == state) and (verdict is None or d.verdict == verdict)
            ),
            key=lambda d: d.id,
        )

    def _client_items(self, client: str) -> tuple[int | None, list[Decision]]:
        """The client's head version (None before its first decision) and its decisions, read
        consistently."""
        version, decisions = None, []
        for item in self._pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _client_key(client)}},
            ConsistentRead=True,
        ):
            if item["sk"]["S"] == "head":
                version = int(item["version"]["N"])
            elif item["sk"]["S"].startswith("decision#"):
                decisions.append(_decision(item))
        return version, sorted(decisions, key=lambda d: d.id)

    def history(self, client: str) -> list[Decision]:
        return self._client_items(client)[1]

    def allowed(self) -> list[Network]:
        """Every active allow entry, as networks (for `Policy.allow`)."""
        return parse_networks([d.client for d in self.list(verdict=ALLOW)])

    # Writing

    @staticmethod
    def _next_id() -> int:
        """A new decision id: the creation time in microseconds and 12 random bits, so ids sort
        by creation like the SQLite store's and need no shared counter (a counter item would be
        one more round trip per decision, and every invocation would queue on it)."""
        return (time.time_ns() // 1000) << 12 | secrets.randbits(12)

    def _delete_after(self, decision: Decision, now: datetime) -> int | None:
        """When DynamoDB may delete the item: the history span after it ends (None: never)."""
        if decision.state == ACTIVE:
            if decision.expires is None:
                return None
            return _epoch(decision.expires) + int(self.history.total_seconds())
        return int((now + self.history).timestamp())

    def _put(self, decision: Decision, now: datetime) -> dict[str, Any]:
        values = {
            "id": decision.id,
            "client": decision.client,
            "verdict": decision.verdict,
            "score": decision.score,
            "reasons": decision.reasons,
            "campaign": decision.campaign,
            "created": decision.created,
            "expires": decision.expires,
            "origin": decision.origin,
            "state": decision.state,
            "note": decision.note,
        }
        item = {**_decision_key(decision.client, decision.id), **{k: _attr(v) for k, v in values.items()}}
        delete_after = self._delete_after(decision, now)
        if delete_after is not None:
            item["delete_after"] = _attr(delete_after)
        return {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}

    def _change(self, old: Decision, new: Decision, now: datetime) -> dict[str, Any]:
        """An update of an active decision that holds only while it is still active."""
        values: dict[str, Any] = {
            "state": new.state,
            "note": new.note,
            "score": new.score,
            "reasons": new.reasons,
            "campaign": new.campaign,
            "expires": new.expires,
        }
        delete_after = self._delete_after(new, now)
        if delete_after is not None:
            values["delete_after"] = delete_after
        update = _update(_decision_key(old.client, old.id), values, "#state = :c_state", state=ACTIVE)
        return {"TableName": self.table, **update}

    def _transact(self, writes: list[dict[str, Any]]) -> bool:
        """Run one transaction; False when a condition failed (someone changed it meanwhile)."""
        from botocore.exceptions import ClientError

        try:
            self.client.transact_write_items(TransactItems=writes)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reasons = exc.response.get("CancellationReasons") or []
            if error.get("Code") == "TransactionCanceledException" and any(
                r.get("Code") in ("ConditionalCheckFailed", "TransactionConflict") for r in reasons
            ):
                return False
            raise
        return True

    def _head(self, client: str, version: int | None) -> dict[str, Any]:
        key = {"pk": {"S": _client_key(client)}, "sk": {"S": "head"}}
        if version is None:
            update = _update(key, {"version": 1}, "attribute_not_exists(pk)")
        else:
            update = _update(key, {"version": version + 1}, "#version = :c_version", version=version)
        return {"Update": {"TableName": self.table, **update}}

    def _block_ttl(self, decisions: list[Decision]) -> timedelta:
        # As the SQLite store: doubling per earlier (ended) block of the client, up to 7 days.
        earlier = sum(1 for d in decisions if d.verdict == BLOCK and d.state != ACTIVE)
        return min(BLOCK_TTL * (2 ** min(earlier, 10)), MAX_BLOCK_TTL)

    def _record_client(self, row: dict[str, Any], now: datetime) -> str | None:
        """Record one flagged client; its outcome ('new', 'refreshed'), or None on a conflict."""
        client, verdict = row["client"], row["verdict"]
        version, decisions = self._client_items(client)
        writes: list[dict[str, Any]] = []
        changed: list[Decision] = []
        for d in decisions:
            due = d.state == ACTIVE and d.expires is not None and d.expires <= _iso(now)
            if due and len(changed) < MAX_EXPIRED_PER_TRANSACTION:
                ended = replace(d, state=EXPIRED)
                writes.append({"Update": self._change(d, ended, now)})
                changed.append(ended)
        ended_ids = {d.id for d in changed}
        live = [d for d in decisions if d.id not in ended_ids]
        active = [d for d in live if d.state == ACTIVE and d.verdict in (ALERT, BLOCK)]
        current = active[-1] if active else None
        ttl = self._block_ttl([*live, *changed]) if verdict == BLOCK else ALERT_TTL
        reasons = list(row["reasons"] or [])
        campaign = row.get("campaign")
        score = None if row["score"] is None else float(row["score"])
        if current is not None and (current.verdict == verdict or current.verdict == BLOCK):
            fresh = replace(current, score=score, reasons=reasons, campaign=campaign, expires=_iso(now + ttl))
            writes.append({"Update": self._change(current, fresh, now)})
            changed.append(fresh)
            outcome = "refreshed"
        else:
            if current is not None:  # an alert that became a block
                revoked = replace(current, state=REVOKED, note="superseded by a block")
                writes.append({"Update": self._change(current, revoked, now)})
                changed.append(revoked)
            new = Decision(
                self._next_id(),
                client,
                verdict,
                score,
                reasons,
                campaign,
                _iso(now),
                _iso(now + ttl),
                DETECTOR,
                ACTIVE,
                None,
            )
            writes.append({"Put": self._put(new, now)})
            changed.append(new)
            outcome = "new"
        writes.append(self._head(client, version))
        if not self._transact(writes):
            return None
        self._seen.update(((d.client, d.id), d) for d in changed)
        return outcome

    def record(self, findings: pl.DataFrame, now: datetime) -> dict[str, int]:
        """Store the detector's alert and block verdicts of `findings` (client, verdict, score,
        reasons[, campaign]); counts by outcome, as the SQLite store's record()."""
        flagged = findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
        counts = {"new": 0, "refreshed": 0, "allowed": 0}
        if flagged.height == 0:
            return counts
        allow = self.allowed()
        rows = []
        for row in flagged.iter_rows(named=True):
            address = client_network(row["client"])
            if address is not None and any(
                n.version == address.version and n.overlaps(address) for n in allow
            ):
                counts["allowed"] += 1
            else:
                rows.append(row)
        # Clients are independent (one transaction each): several at a time, as each costs a few
        # round trips and a large log object can flag thousands.
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for outcome in pool.map(lambda row: self._record_with_retries(row, now), rows):
                counts[outcome] += 1
        return counts

    def _record_with_retries(self, row: dict[str, Any], now: datetime) -> str:
        for _ in range(MAX_ATTEMPTS):
            outcome = self._record_client(row, now)
            if outcome is not None:
                return outcome
        raise MLGuardError(
            f"DynamoDB table {self.table}: the decisions of {row['client']} kept changing under "
            f"MLGuard in {MAX_ATTEMPTS} attempts"
        )

    def _end(self, decision: Decision, state: str, note: str | None, now: datetime) -> bool:
        """End an active decision (expired, revoked); False when it was no longer active."""
        from botocore.exceptions import ClientError

        ended = replace(decision, state=state, note=note)
        try:
            self.client.update_item(**self._change(decision, ended, now))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                self._seen.pop((decision.client, decision.id), None)
                return False
            raise
        self._seen[(decision.client, decision.id)] = ended
        return True

    def expire(self, now: datetime) -> int:
        """End every active decision whose TTL has passed; how many."""
        due = [d for d in self.list() if d.expires is not None and d.expires <= _iso(now)]
        return sum(self._end(d, EXPIRED, d.note, now) for d in due)

    def allow(self, value: str, now: datetime, reason: str, ttl: timedelta | None = None) -> int:
        """Allow a client or range from now on (for `ttl`, or for good); revokes its active
        alerts and blocks. Returns the number of decisions revoked."""
        network = parse_networks([value])[0]
        entry = Decision(
            self._next_id(),
            str(network),
            ALLOW,
            None,
            [],
            None,
            _iso(now),
            _iso(now + ttl) if ttl else None,
            PERSON,
            ACTIVE,
            reason,
        )
        self.client.put_item(**self._put(entry, now))
        self._seen[(entry.client, entry.id)] = entry
        revoked = 0
        for d in self.list():
            address = client_network(d.client)
            if (
                d.verdict in (ALERT, BLOCK)
                and address is not None
                and address.version == network.version
                and address.overlaps(network)
            ):
                revoked += self._end(d, REVOKED, f"allowed: {reason}", now)
        return revoked

    def unblock(self, client: str, reason: str, now: datetime) -> int:
        """Revoke the client's active blocks (a person's call); how many."""
        blocks = [d for d in self.history(client) if d.state == ACTIVE and d.verdict == BLOCK]
        return sum(self._end(d, REVOKED, f"unblocked: {reason}", now) for d in blocks)

    # Processed S3 objects: each event is acted on once.

    def _object_key(self, object_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"object#{object_id}"}, "sk": {"S": "processed"}}

    def claim(self, object_id: str, now: datetime, lease: timedelta) -> tuple[str, dict[str, Any] | None]:
        """Take an S3 object for processing: ('claimed', None); ('done', what was recorded) when
        it was processed before; ('busy', None) while another invocation holds its lease."""
        from botocore.exceptions import ClientError

        values = {
            "status": WORKING,
            "lease_until": int((now + lease).timestamp()),
            "delete_after": int((now + self.history).timestamp()),
        }
        update = _update(
            self._object_key(object_id),
            values,
            "attribute_not_exists(pk) OR (#status = :c_status AND #lease_until < :c_now)",
            status=WORKING,
        )
        update["ExpressionAttributeValues"][":c_now"] = _attr(int(now.timestamp()))
        try:
            self.client.update_item(TableName=self.table, **update)
            return "claimed", None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        found = self.client.get_item(
            TableName=self.table, Key=self._object_key(object_id), ConsistentRead=True
        ).get("Item", {})
        if found.get("status", {}).get("S") == DONE:
            return DONE, json.loads(found.get("outcome", {}).get("S", "{}"))
        return "busy", None

    def finish(self, object_id: str, now: datetime, outcome: dict[str, Any]) -> None:
        """Mark an object processed, with what came of it (shown when it is delivered again)."""
        values = {
            "status": DONE,
            "outcome": json.dumps(outcome, sort_keys=True),
            "finished": _iso(now),
            "delete_after": int((now + self.history).timestamp()),
        }
        self.client.update_item(TableName=self.table, **_update(self._object_key(object_id), values))

    def release(self, object_id: str) -> None:
        """Give up a claim (a failure worth retrying): the next delivery processes the object."""
        self.client.delete_item(
            TableName=self.table,
            Key=self._object_key(object_id),
            ConditionExpression="#status = :working",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":working": {"S": WORKING}},
        )


def table_definition(name: str) -> dict[str, Any]:
    """CreateTable arguments for the store's table (tests, and `deploy/aws/template.yaml` says
    the same in CloudFormation)."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "state", "AttributeType": "S"},
            {"AttributeName": "id", "AttributeType": "N"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": STATE_INDEX,
                "KeySchema": [
                    {"AttributeName": "state", "KeyType": "HASH"},
                    {"AttributeName": "id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }
