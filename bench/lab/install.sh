#!/usr/bin/env bash
# Idempotent installer for the MLGuard attack lab (Debian 12, run as root).
# Installs nginx, libfaketime and the attack tools from Debian's own packages;
# a package that is missing from the archive is reported and skipped, never fatal,
# because the lab runner skips any tool whose binary is absent.
set -u
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update -qq || echo "warning: apt-get update failed" >&2

# Core: the lab cannot run without these two.
$SUDO apt-get install -y -qq --no-install-recommends nginx-light faketime libfaketime \
  || $SUDO apt-get install -y -qq --no-install-recommends nginx faketime libfaketime

# Tools: one at a time so a single missing package does not block the rest.
for pkg in sqlmap gobuster dirb wfuzz hydra ffuf whatweb wapiti nmap wget; do
  if dpkg -s "$pkg" >/dev/null 2>&1; then
    echo "ok: $pkg already installed"
  elif $SUDO apt-get install -y -qq --no-install-recommends "$pkg"; then
    echo "ok: $pkg installed"
  else
    echo "skip: $pkg is not installable here" >&2
  fi
done

# A boot-time nginx from the package would listen on :80; the lab uses its own
# config and never needs it, so stop it if the package started it.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop nginx >/dev/null 2>&1 || true; fi
if [ -f /run/nginx.pid ]; then $SUDO nginx -s stop >/dev/null 2>&1 || true; fi
exit 0
