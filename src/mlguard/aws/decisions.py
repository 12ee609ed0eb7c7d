"""A person's calls on the DynamoDB decision table, from a shell with AWS credentials:

    python -m mlguard.aws.decisions --table mlguard-decisions list [--json]
    python -m mlguard.aws.decisions --table mlguard-decisions allow 203.0.113.7 --reason "office" [--ttl 30d]
    python -m mlguard.aws.decisions --table mlguard-decisions unblock 203.0.113.7 --reason "false positive"

`allow` revokes the client's (or range's) active alerts and blocks and keeps it from being
recorded or blocked again; the function takes it out of the IP set on its next run (a log
object, or the schedule). Exit code 2 with one line on a bad value.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta

from mlguard.aws.clients import aws_client, error_code
from mlguard.aws.dynamodb import DynamoDecisionStore
from mlguard.errors import MLGuardError, UsageError
from mlguard.explain.reasons import safe_text
from mlguard.spans import parse_span


def _ttl(text: str | None) -> timedelta | None:
    if text is None:
        return None
    span = parse_span(text)
    if span is None:
        raise UsageError(f"--ttl '{safe_text(text, 40)}' is not a span such as 12h or 30d")
    return span


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlguard.aws.decisions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--table", required=True, help="the DynamoDB table (MLGUARD_TABLE of the function)")
    parser.add_argument("--endpoint-url", default=None, help="another AWS endpoint (tests, local stacks)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="active decisions")
    listing.add_argument("--json", action="store_true", help="JSON Lines")
    allow = commands.add_parser("allow", help="never block this address or range again")
    allow.add_argument("client")
    allow.add_argument("--reason", required=True)
    allow.add_argument("--ttl", default=None, help="for this long only (e.g. 30d); default: for good")
    unblock = commands.add_parser("unblock", help="revoke the active blocks of an address")
    unblock.add_argument("client")
    unblock.add_argument("--reason", required=True)
    args = parser.parse_args(argv)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        store = DynamoDecisionStore(args.table, aws_client("dynamodb", args.endpoint_url))
        if args.command == "list":
            for d in store.list():
                if args.json:
                    print(json.dumps(d.as_json(), ensure_ascii=True))
                else:
                    print(
                        f"{d.id}\t{d.verdict}\t{safe_text(d.client, 45)}\t{d.expires or 'never'}\t{d.origin}"
                    )
        elif args.command == "allow":
            revoked = store.allow(args.client, now, args.reason, _ttl(args.ttl))
            print(f"allowed {safe_text(args.client, 45)}; {revoked} active decision(s) revoked")
        else:
            revoked = store.unblock(args.client, args.reason, now)
            print(f"{revoked} block(s) of {safe_text(args.client, 45)} revoked")
    except MLGuardError as exc:
        print(f"error: {safe_text(exc, 300)}", file=sys.stderr)
        return 2
    except Exception as exc:  # botocore's: no such table, denied, no credentials
        if error_code(exc) is None and type(exc).__module__.split(".")[0] != "botocore":
            raise
        print(
            f"error: table {safe_text(args.table, 80)}: {safe_text(error_code(exc) or exc, 200)}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
