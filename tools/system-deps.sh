#!/usr/bin/env bash
# Install the non-Python tools the test suite uses, when missing: promtool and prometheus
# (Debian package `prometheus`: promtool checks the /metrics exposition and the alert rules, the
# prometheus server scrapes a real kernel in tests/test_prometheus_scrape.py), spin + gcc
# (check the Promela models), nats-server (the federation tests and rig start their own on
# a loopback port) and chromium (the status page's browser tests drive /usr/bin/chromium
# through Playwright; no browser is ever downloaded by Playwright itself).
# A no-op when they are present; needs root and apt-get otherwise (CI runs as root).
set -euo pipefail
missing=()
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
command -v spin >/dev/null 2>&1 || missing+=(spin)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
# Debian installs it in /usr/sbin, which a non-root PATH may lack
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the test suite" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: ${missing[*]} not installed and cannot install them here (needs root + apt-get);" \
       "the promtool, spin, federation and browser tests will fail until they are on PATH" >&2
fi
