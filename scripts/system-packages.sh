#!/usr/bin/env bash
# The Debian packages the whole test suite needs, installed only when missing (quietly) when run as
# root; otherwise one line naming the exact command, exit 1. The one list of system packages.
#   chromium, chromium-driver, fonts-*: the Audit Logs page test drives Debian's headless browser
#   postgresql, redis-server: the deployed topology (make stack, tests/test_stack.py)
set -euo pipefail
PACKAGES=(chromium chromium-driver fonts-liberation fonts-dejavu-core postgresql redis-server)

if ! command -v dpkg-query >/dev/null; then
  echo "system-packages: not a Debian machine; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
command="apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages; run: sudo sh -c '$command'" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
