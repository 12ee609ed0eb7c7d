#!/usr/bin/env bash
# Install the peer tools MLGuard is compared against: CrowdSec (Debian package, offline hub snapshot)
# and fail2ban.  Idempotent: safe to run again; it only (re)creates what is missing.
#
# Why the credentials file: the crowdsec package's postinst runs `cscli capi register` (needs the
# Internet) unless /etc/crowdsec/online_api_credentials.yaml exists and is NON-EMPTY.  Offline, that
# registration fails, the postinst fails and dpkg is left half-configured for every later install.
# With the file in place the postinst sets up the offline hub (/usr/share/crowdsec/hub) and enables the
# nginx, apache2, base-http-scenarios and http-cve collections itself.
#
# Why no running services: bench/peers runs its own throw-away Local API on 127.0.0.1 per replay and
# fail2ban only as `fail2ban-regex`; a system crowdsec/fail2ban daemon is not needed.  Services are
# kept from starting during the install (policy-rc.d) and, when this script installed the package,
# disabled afterwards.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install.sh: must run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

CAPI=/etc/crowdsec/online_api_credentials.yaml
mkdir -p /etc/crowdsec
if [[ ! -s $CAPI ]]; then
  # Any non-empty content stops the postinst from registering with the online API.
  cat >"$CAPI" <<'EOF'
# Offline install for MLGuard's bench/peers: no Central API registration (left non-empty on purpose).
EOF
  echo "install.sh: created $CAPI (offline, no CAPI registration)"
fi

# Keep package scripts from starting daemons while we install (restored afterwards).
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
if [[ -e $POLICY ]]; then
  POLICY_BACKUP=$(mktemp)
  cp -p "$POLICY" "$POLICY_BACKUP"
fi
restore_policy() {
  if [[ -n $POLICY_BACKUP ]]; then
    cp -p "$POLICY_BACKUP" "$POLICY"
    rm -f "$POLICY_BACKUP"
  else
    rm -f "$POLICY"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

need=()
dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -q 'install ok installed' || need+=(crowdsec)
dpkg-query -W -f='${Status}' fail2ban 2>/dev/null | grep -q 'install ok installed' || need+=(fail2ban)
# unshare/nsenter (util-linux) and ip (iproute2): each replay runs in a private network namespace.
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)

# Other sessions may be using apt at the same time: wait for the dpkg lock instead of failing.
APT=(apt-get -o DPkg::Lock::Timeout=900)
"${APT[@]}" update -qq
# A previous failed attempt (without the credentials file) leaves crowdsec half-configured: finish it.
if dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -qE 'half-configured|unpacked'; then
  for _ in $(seq 1 90); do
    dpkg --configure -a && break
    sleep 10
  done
fi
if ((${#need[@]})); then
  "${APT[@]}" install -y -qq --no-install-recommends "${need[@]}"
  if [[ -d /run/systemd/system ]]; then
    for unit in crowdsec fail2ban; do
      [[ " ${need[*]} " == *" $unit "* ]] || continue
      systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    done
  fi
fi

# Make sure the hub items the bench uses are enabled system-wide too (the postinst does it on a first
# install, but an admin may have removed them).  Done like the postinst, with symlinks from
# /etc/crowdsec into the offline hub: `cscli ... install` would try to download data files and
# `cscli ... list` asks the Internet for the latest version.  (bench/peers itself does not depend
# on this: each replay builds its own config dir from the same hub snapshot.)
python3 - <<'PY'
import json
from pathlib import Path

live = Path("/var/lib/crowdsec/hub")
index = json.loads((live / ".index.json").read_text())
want = {("collections", c) for c in ("crowdsecurity/nginx", "crowdsecurity/base-http-scenarios",
                                     "crowdsecurity/http-cve")}
want |= {("parsers", p) for p in ("crowdsecurity/syslog-logs", "crowdsecurity/dateparse-enrich",
                                  "crowdsecurity/whitelists")}
todo, seen = list(want), set()
while todo:
    kind, name = todo.pop()
    if (kind, name) in seen:
        continue
    seen.add((kind, name))
    entry = index[kind][name]
    if kind == "collections":
        todo += [(k, n) for k in ("parsers", "scenarios", "postoverflows", "collections")
                 for n in entry.get(k) or []]
    parts = Path(entry["path"]).parts
    link = Path("/etc/crowdsec").joinpath(*parts[:-2], parts[-1])
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(live / entry["path"])
        print(f"install.sh: enabled {kind[:-1]} {name}")
print(f"install.sh: {len(seen)} hub items enabled (nginx, base-http-scenarios, http-cve + parsers)")
PY

echo "--- versions"
crowdsec -version 2>&1 | grep -m1 'version:'
fail2ban-regex --version 2>&1 | head -1
dpkg-query -W -f='${Package} ${Version}\n' crowdsec fail2ban iproute2
echo "--- enabled crowdsec collections"
ls /etc/crowdsec/collections
