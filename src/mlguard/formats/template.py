"""Formats compiled from the server's own format string: nginx `log_format`, Apache `LogFormat`.

A format string is split into literal text and variables. Each variable becomes a named regex
group whose pattern depends on what the variable holds and on the text around it (a variable
between quotes may hold spaces and escaped quotes; one between brackets runs to the bracket;
otherwise it runs to the next space). The whole line is parsed by one vectorised
`str.extract_groups`, and the variables the features need are mapped to the record schema by
name; every other variable is kept as a column of its own (named like nginx's variables, so
Apache's `%{X-Forwarded-For}i` and nginx's `$http_x_forwarded_for` are the same column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mlguard.errors import UsageError
from mlguard.formats.base import LogFormat, address_text, conform
from mlguard.schema import dash_null

TIME_LOCAL = "%d/%b/%Y:%H:%M:%S %z"
QUOTED = r'(?:[^"\\]|\\.)*'

# Patterns by what a variable holds (used when the text around it does not decide).
_STATUS = r"\d{3}|-"
_NUMBER = r"\d+|-"
_DECIMAL = r"[\d.]+|-"
_TIME_LOCAL = r"\d{1,2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}"


@dataclass(frozen=True)
class Variable:
    """One variable of a format string: its column name, how it is matched, what it means."""

    column: str  # the column it becomes (a record field name, or its own name)
    pattern: str | None = None  # None: decided by context
    role: str | None = None  # which record field it fills: client, time, request, ...
    time_format: str | None = None  # for role 'time': how to read it ('epoch' for seconds)


def _nginx_variable(name: str) -> Variable:
    roles = {
        "remote_addr": ("client", r"\S+"),
        "binary_remote_addr": ("client", r"\S+"),
        "realip_remote_addr": ("client", r"\S+"),
        "request": ("request", None),
        "status": ("status", _STATUS),
        "body_bytes_sent": ("bytes", _NUMBER),
        "bytes_sent": ("bytes_total", _NUMBER),
        "http_referer": ("referer", None),
        "http_user_agent": ("user_agent", None),
        "request_method": ("method", r"[A-Za-z_-]+|-"),
        "request_uri": ("target", None),
        "server_protocol": ("protocol", r"\S+"),
        "uri": ("path", None),
        "document_uri": ("path", None),
        "args": ("args", None),
        "query_string": ("args", None),
    }
    if name == "time_local":
        return Variable("time", _TIME_LOCAL, "time", TIME_LOCAL)
    if name == "time_iso8601":
        return Variable(
            "time", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})", "time", "iso"
        )
    if name == "msec":
        return Variable("time", r"\d+(?:\.\d+)?", "time", "epoch")
    if name in roles:
        role, pattern = roles[name]
        column = role if role not in ("bytes_total", "target", "path", "args") else name
        return Variable(column, pattern, role)
    if name.startswith("upstream_") and name != "upstream_cache_status":
        # one value per upstream tried: "10.0.0.1:80, 10.0.0.2:80" (" : " after internal redirects)
        return Variable(name, r"\S+(?:(?:, | : )\S+)*")
    return Variable(name)


# Apache mod_log_config directives: letter -> (column, role, pattern)
_APACHE: dict[str, tuple[str, str | None, str | None]] = {
    "a": ("client", "client", r"\S+"),
    "h": ("client", "client", r"\S+"),
    "A": ("server_addr", None, r"\S+"),
    "l": ("remote_ident", None, r"\S+"),
    "u": ("remote_user", None, None),
    "r": ("request", "request", None),
    "s": ("status", "status", _STATUS),
    "b": ("bytes", "bytes", _NUMBER),
    "B": ("bytes", "bytes", _NUMBER),
    "O": ("bytes_sent", None, _NUMBER),
    "I": ("bytes_received", None, _NUMBER),
    "S": ("bytes_transferred", None, _NUMBER),
    "D": ("request_time_us", None, r"\d+|-"),
    "T": ("request_time_s", None, _DECIMAL),
    "v": ("server_name", None, r"\S+"),
    "V": ("server_name", None, r"\S+"),
    "p": ("server_port", None, r"\d+|-"),
    "P": ("pid", None, r"\d+|-"),
    "m": ("method", "method", r"[A-Za-z_-]+|-"),
    "U": ("uri", "path", None),
    "q": ("query_string", "query_string", None),
    "H": ("protocol", "protocol", r"\S+"),
    "X": ("connection_status", None, r"\S"),
    "k": ("keepalive_requests", None, r"\d+|-"),
    "L": ("log_id", None, r"\S+"),
    "R": ("handler", None, r"\S+"),
    "f": ("filename", None, None),
}
_APACHE_HEADER_ROLES = {"referer": "referer", "user-agent": "user_agent"}
# strftime directives Polars/chrono reads the same way Apache writes them
_STRFTIME_SAFE = re.compile(r"^(?:[^%]|%[aAbBdHjmMpSyYzZ%eTDFR])*$")


def _apache_variable(letter: str, arg: str | None) -> Variable:
    if letter == "t":
        if arg is None:
            return Variable("time", r"\[" + _TIME_LOCAL + r"\]", "time", "[" + TIME_LOCAL + "]")
        if arg in ("sec", "begin:sec", "end:sec"):
            return Variable("time", r"\d+", "time", "epoch")
        if arg in ("msec", "begin:msec", "end:msec"):
            return Variable("time", r"\d+", "time", "epoch_ms")
        fmt = arg.removeprefix("begin:").removeprefix("end:")
        if not _STRFTIME_SAFE.match(fmt):
            raise UsageError(f"Apache time format '%{{{arg}}}t' is not supported")
        return Variable("time", None, "time", fmt)
    if letter == "i" and arg is not None:
        header = arg.lower()
        column = "http_" + re.sub(r"[^a-z0-9]+", "_", header).strip("_")
        role = _APACHE_HEADER_ROLES.get(header)
        return Variable(role or column, None, role)
    if letter in "oenCcx" and arg is not None:
        kind = {"o": "sent_http", "e": "env", "n": "note", "C": "cookie", "c": "ssl", "x": "ssl"}[letter]
        return Variable(f"{kind}_" + re.sub(r"[^a-z0-9]+", "_", arg.lower()).strip("_"))
    if letter == "a" and arg is not None:
        return Variable("peer_addr" if arg == "c" else "client", r"\S+", None if arg == "c" else "client")
    if letter in _APACHE:
        column, role, pattern = _APACHE[letter]
        return Variable(column, pattern, role)
    raise UsageError(f"Apache LogFormat directive '%{letter}' is not supported")


# A piece of a format string: literal text, or a variable
Piece = str | Variable

_NGINX_TOKEN = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_APACHE_TOKEN = re.compile(r"%(?:!?\d+(?:,\d+)*)?[<>]?(?:\{([^}]*)\})?([a-zA-Z%])")


def nginx_pieces(template: str) -> list[Piece]:
    pieces: list[Piece] = []
    pos = 0
    for m in _NGINX_TOKEN.finditer(template):
        if m.start() > pos:
            pieces.append(template[pos : m.start()])
        pieces.append(_nginx_variable(m.group(1) or m.group(2)))
        pos = m.end()
    if pos < len(template):
        pieces.append(template[pos:])
    return pieces


def apache_pieces(template: str) -> list[Piece]:
    # A LogFormat copied from a config file carries the config's escapes.
    template = template.replace('\\"', '"').replace("\\t", "\t")
    pieces: list[Piece] = []
    pos = 0
    for m in _APACHE_TOKEN.finditer(template):
        if m.start() > pos:
            pieces.append(template[pos : m.start()])
        if m.group(2) == "%":
            pieces.append("%")
        else:
            pieces.append(_apache_variable(m.group(2), m.group(1)))
        pos = m.end()
    if pos < len(template):
        pieces.append(template[pos:])
    return pieces


def _merge_literals(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] += piece
        elif piece != "":
            out.append(piece)
    return out


def _pattern(prev: Piece | None, var: Variable, nxt: Piece | None) -> str:
    """The regex of a variable: by what it holds, else by the text around it."""
    quoted = isinstance(prev, str) and prev.endswith('"') and isinstance(nxt, str) and nxt.startswith('"')
    if quoted:
        return QUOTED  # quoted fields may hold spaces and \" escapes (and '-' for empty)
    if var.pattern is not None:
        return var.pattern
    if var.time_format is not None:
        return ".+?"
    if isinstance(prev, str) and prev.endswith("[") and isinstance(nxt, str) and nxt.startswith("]"):
        return r"[^\]]*"
    if nxt is None or (isinstance(nxt, str) and nxt[0].isspace()):
        return r"\S*"
    if isinstance(nxt, str):
        return rf"[^{re.escape(nxt[0])}]*?" if not nxt[0].isspace() else r"\S*"
    return r"\S*?"  # two variables back to back: only their own patterns can split them


def compile_regex(pieces: list[Piece]) -> tuple[str, dict[str, Variable]]:
    """The line regex with one named group per variable (column names made unique)."""
    pieces = _merge_literals(pieces)
    parts = ["^"]
    columns: dict[str, Variable] = {}
    for i, piece in enumerate(pieces):
        if isinstance(piece, str):
            if i == len(pieces) - 1 and piece == '"' and i > 0:
                # A line cut short inside its last quoted field (real logs have them) still parses.
                parts.append('(?:"|$)')
                continue
            # Servers write one space where the format has one; tolerate runs of spaces.
            parts.append(re.sub(r"(\\ )+", r" +", re.escape(piece)))
            continue
        prev = pieces[i - 1] if i else None
        nxt = pieces[i + 1] if i + 1 < len(pieces) else None
        column = piece.column
        if column in columns:  # the same variable twice: keep the first, name the others apart
            n = 2
            while f"{column}_{n}" in columns:
                n += 1
            column = f"{column}_{n}"
            piece = Variable(column, piece.pattern, None, None)
        columns[column] = piece
        group = f"g{len(columns) - 1}"
        parts.append(f"(?<{group}>{_pattern(prev, piece, nxt)})")
    parts.append(r"\r?$")
    return "".join(parts), columns


def _literal_regex(text: str) -> str:
    # Servers write one space where the format has one; tolerate runs of spaces.
    return re.sub(r"(\\ )+", r" +", re.escape(text))


@dataclass(frozen=True)
class Segment:
    """The text of a line between two of its quote characters, as the fast path reads it."""

    regex: str  # anchored; named groups g<K> as in the full regex
    whole: str | None = None  # the group that is the entire segment (a quoted field): no regex needed
    first: str | None = None  # the first group of `regex`, null exactly when it does not match


def quote_segments(pieces: list[Piece], variables: list[Variable]) -> list[Segment] | None:
    """For the fast path: the regex of each piece of a line between its quote characters, with
    the same group names as the full regex, or None when the format quotes nothing.

    A segment that is one whole variable gets the pattern "(?<gK>.*)": between two quotes
    the field is everything there (a line whose field held an escaped quote takes the full
    regex instead)."""
    merged = _merge_literals(pieces)
    # A variable whose pattern may run over a quote (".*", a time read with ".+?") would be cut
    # by the split: such formats take the full regex only.
    for var in variables:
        pattern = var.pattern if var.pattern is not None else (".+?" if var.time_format else "")
        if re.search(r"(?<!\\)\.", pattern):
            return None
    segments: list[list[str | int]] = [[]]
    k = 0
    for piece in merged:
        if isinstance(piece, str):
            for n, part in enumerate(piece.split('"')):
                if n:
                    segments.append([])
                if part:
                    segments[-1].append(part)
        else:
            segments[-1].append(k)
            k += 1
    if len(segments) < 3 or len(segments) % 2 == 0:
        return None
    out: list[Segment] = []
    for n, items in enumerate(segments):
        end = r"\r?$" if n == len(segments) - 1 else "$"
        if len(items) == 1 and isinstance(items[0], int) and end == "$":
            out.append(Segment(f"^(?<g{items[0]}>.*)$", whole=f"g{items[0]}"))
            continue
        parts = ["^"]
        for i, item in enumerate(items):
            if isinstance(item, str):
                parts.append(_literal_regex(item))
                continue
            prev = items[i - 1] if i else None
            nxt = items[i + 1] if i + 1 < len(items) else None
            neighbour = [variables[x] if isinstance(x, int) else x for x in (prev, nxt)]
            parts.append(f"(?<g{item}>{_pattern(neighbour[0], variables[item], neighbour[1])})")
        groups = [item for item in items if isinstance(item, int)]
        out.append(Segment("".join(parts) + end, first=f"g{groups[0]}" if groups else None))
    return out


def _time_expr(text: pl.Expr, time_format: str) -> pl.Expr:
    utc = pl.Datetime("us", "UTC")
    if time_format == "epoch":
        return (text.cast(pl.Float64, strict=False) * 1_000_000).cast(pl.Int64).cast(utc)
    if time_format == "epoch_ms":
        return (text.cast(pl.Int64, strict=False) * 1_000).cast(utc)
    if time_format == "iso":
        return text.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    if "%z" in time_format or "%Z" in time_format:
        return text.str.strptime(utc, time_format, strict=False, cache=True)
    # No offset in the format: the server wrote local time; without knowing its zone, read it as UTC.
    return text.str.strptime(pl.Datetime("us"), time_format, strict=False, cache=True).dt.replace_time_zone(
        "UTC"
    )


class TemplateFormat(LogFormat):
    """A format compiled from an nginx `log_format` or Apache `LogFormat` string."""

    # A request line may name the whole URL ("GET http://host:80/a HTTP/1.1"): load balancers
    # log every request that way. Such formats set this to cut it to the path ("GET /a ...").
    absolute_targets = False

    def __init__(self, dialect: str, template: str) -> None:
        if dialect not in ("nginx", "apache"):
            raise UsageError(f"unknown format dialect '{dialect}'; expected nginx or apache")
        template = template.strip()
        if not template:
            raise UsageError(f"the {dialect} format string is empty")
        pieces = nginx_pieces(template) if dialect == "nginx" else apache_pieces(template)
        self.dialect = dialect
        self.template = template
        self._compile(f"{dialect}:{template}", pieces)

    def _compile(self, name: str, pieces: list[Piece]) -> None:
        self.name = name
        self.regex, self.variables = compile_regex(pieces)
        self.segments = quote_segments(pieces, list(self.variables.values()))
        roles = {v.role for v in self.variables.values() if v.role}
        what = name.split(":", 1)[0]
        if not {"client", "client_port", "forwarded_client"} & roles:
            raise UsageError(f"the {what} format has no client address field")
        if "time" not in roles:
            raise UsageError(f"the {what} format has no time field")
        if "status" not in roles:
            raise UsageError(f"the {what} format has no status field")
        if "request" not in roles and not {"method", "path", "target"} & roles:
            raise UsageError(f"the {what} format has no request field")
        # A forwarded-for header that names the client is also kept whole, for --trusted-proxy.
        self.extra_columns = [
            c for c, v in self.variables.items() if v.role is None or v.role == "forwarded_client"
        ]

    def _role(self, role: str) -> tuple[pl.Expr, Variable] | None:
        for i, (_column, var) in enumerate(self.variables.items()):
            if var.role == role:
                return pl.col(f"g{i}"), var
        return None

    def _request(self) -> pl.Expr:
        found = self._role("request")
        if found is not None:
            return found[0]
        # Rebuild the request line from its parts (method, target or path + query, protocol).
        method = self._role("method")
        target = self._role("target")
        path = self._role("path")
        query = self._role("query_string")  # Apache's %q: '?a=b' or ''
        args = self._role("args")  # nginx's $args: 'a=b' or '' or '-'
        if target is not None:
            uri = target[0]
        elif path is not None:
            if query is not None:
                q = query[0]
            elif args is not None:
                q = pl.when(args[0].is_in(["", "-"])).then(pl.lit("")).otherwise("?" + args[0])
            else:
                q = pl.lit("")
            uri = pl.when(q.is_in(["", "-"]).fill_null(True)).then(path[0]).otherwise(path[0] + q)
        else:
            uri = pl.lit("-")
        parts = [method[0] if method is not None else pl.lit("-"), uri]
        protocol = self._role("protocol")
        if protocol is not None:
            parts.append(protocol[0])
        return pl.concat_str(parts, separator=" ")

    def _groups(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        """Every line's variables as columns g0, g1, ...: split on quotes and match each short
        piece where the line allows it (the common case, several times faster), the one
        regex over the whole line for the rest (escaped quotes, cut lines, junk)."""
        names = [f"g{i}" for i in range(len(self.variables))]

        def exact(frame: pl.LazyFrame) -> pl.LazyFrame:
            groups = frame.with_columns(pl.col("line").str.extract_groups(self.regex).alias("_g")).unnest(
                "_g"
            )
            return groups.select("line_no", "line", *names)

        if self.segments is None:
            return exact(lines)
        n = len(self.segments) - 1
        split = lines.with_columns(pl.col("line").str.split_exact('"', n).alias("_q")).unnest(
            "_q", separator=""
        )
        fields = [pl.col(f"_qfield_{j}") for j in range(n + 1)]
        checks = [field.is_not_null() for field in fields]
        checks += [~field.str.ends_with("\\") for field in fields[:-1]]  # an escaped quote split it
        columns: list[pl.Expr] = []
        structs: list[str] = []
        for j, (field, segment) in enumerate(zip(fields, self.segments, strict=True)):
            if segment.whole is not None:  # the whole field between two quotes: no regex at all
                columns.append(field.alias(segment.whole))
            elif segment.first is not None:
                columns.append(field.str.extract_groups(segment.regex).alias(f"_m{j}"))
                structs.append(f"_m{j}")
                checks.append(pl.col(segment.first).is_not_null())  # no match: every group null
            else:
                checks.append(field.str.contains(segment.regex))
        fast = split.with_columns(columns).unnest(*structs)
        fast = fast.with_columns(pl.all_horizontal(checks).fill_null(False).alias("_ok"))
        good = fast.filter(pl.col("_ok")).select("line_no", "line", *names)
        return pl.concat([good, exact(fast.filter(~pl.col("_ok")).select("line_no", "line"))])

    def plan(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        groups = self._groups(lines)
        client = self._role("client")
        with_port = self._role("client_port")
        time = self._role("time")
        status = self._role("status")
        assert time is not None and status is not None  # checked when compiled
        forwarded = self._role("forwarded_client")
        if client is not None:
            address = client[0].str.strip_chars("[]")
        elif forwarded is not None:
            # No peer address in the format (Envoy's default): the right-most X-Forwarded-For
            # entry, the one the proxy itself appended; --trusted-proxy can see further left.
            last = forwarded[0].str.split(",").list.last().str.strip_chars(" ")
            address = pl.when(last.is_in(["", "-"])).then(None).otherwise(address_text(last))
        else:
            # "ip:port", "[v6]:port": the port goes, the address stays
            address = (
                with_port[0]
                .str.replace(r"^\[([^\]]*)\](?::\d+)?$", "$1")
                .str.replace(r"^([^\[].*):\d+$", "$1")
            )
        request = self._request()
        if self.absolute_targets:
            request = request.str.replace(r"^(\S+ )[A-Za-z][A-Za-z0-9+.-]*://[^/ ?]*(/?)", "$1/")
        time_format = time[1].time_format or TIME_LOCAL
        bytes_ = self._role("bytes")
        referer = self._role("referer")
        agent = self._role("user_agent")
        matched = pl.col("g0").is_not_null()
        frame = groups.with_columns(
            address.str.to_lowercase().alias("client"),
            _time_expr(time[0], time_format).alias("time"),
            request.alias("request"),
            status[0].cast(pl.UInt16, strict=False).alias("status"),
            (bytes_[0].cast(pl.UInt64, strict=False) if bytes_ else pl.lit(None, pl.UInt64)).alias("bytes"),
            (dash_null(referer[0]) if referer else pl.lit(None, pl.String)).alias("referer"),
            (dash_null(agent[0]) if agent else pl.lit(None, pl.String)).alias("user_agent"),
            *[
                pl.col(f"g{i}").alias(f"_x_{column}")
                for i, column in enumerate(self.variables)
                if column in self.extra_columns
            ],
        )
        reason = (
            pl.when(pl.col("line").str.strip_chars() == "")
            .then(pl.lit("empty line"))
            .when(~matched)
            .then(pl.lit("does not match the log format"))
            .when(pl.col("client").is_null())
            .then(pl.lit("no client address"))
            .when(pl.col("time").is_null())
            .then(pl.lit("bad timestamp"))
            .when(pl.col("status").is_null() & (status[0] != "-"))
            .then(pl.lit("bad status"))
            .otherwise(None)
        )
        # Extra fields ride along after the schema's columns (records keep them, features don't read them).
        frame = frame.with_columns(pl.col(f"_x_{c}").alias(c) for c in self.extra_columns)
        return conform(frame, reason, tuple(self.extra_columns))


def from_config(dialect: str, text: str, name: str | None) -> str:
    """The format string called `name` in an nginx or Apache config file's text."""
    found: dict[str, str] = {}
    if dialect == "nginx":
        for m in re.finditer(r"\blog_format\s+(\S+)\s+(?:escape=\S+\s+)?((?:'[^']*'|\"[^\"]*\"|\s)+);", text):
            found[m.group(1)] = "".join(q[1:-1] for q in re.findall(r"'[^']*'|\"[^\"]*\"", m.group(2)))
    else:
        for m in re.finditer(
            r'^\s*(?:LogFormat|CustomLog\s+\S+)\s+"((?:[^"\\]|\\.)*)"\s*(\S+)?', text, re.M | re.I
        ):
            found[m.group(2) or "default"] = m.group(1)
    if not found:
        raise UsageError(f"no {'log_format' if dialect == 'nginx' else 'LogFormat'} found in the config file")
    if name is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise UsageError(f"the config file defines several formats ({', '.join(sorted(found))}); name one")
    if name not in found:
        raise UsageError(f"no format named '{name}' in the config file (it has: {', '.join(sorted(found))})")
    return found[name]


def parse_spec(spec: str) -> TemplateFormat | None:
    """`nginx:FORMAT`, `apache:FORMAT`, `nginx-config:PATH[#NAME]`, `apache-config:PATH[#NAME]`,
    or None when `spec` is not one of these (a built-in format's name)."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        return None
    if kind in ("nginx", "apache"):
        return TemplateFormat(kind, rest)
    if kind in ("nginx-config", "apache-config"):
        path, _, name = rest.partition("#")
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read config file '{path}': {exc.strerror or exc}") from None
        dialect = kind.removesuffix("-config")
        return TemplateFormat(dialect, from_config(dialect, text, name or None))
    return None
