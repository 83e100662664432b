#!/usr/bin/env bash
# mss set-up: `bash setup.sh run` installs what the service needs and runs the demo
# (`bash setup.sh run --pair`: two demo operators, mss.test and autre.test, that know each
# other); `bash setup.sh test` installs what the tests need and runs the whole suite.
# Works on a fresh Debian 12 machine with Python 3.11 as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-}"
PAIR="${2:-}"
case "$MODE $PAIR" in
  "run "|"run --pair"|test\ *) ;;  # test: further arguments go to pytest
  *) echo "usage: bash setup.sh run [--pair] | test [pytest arguments]" >&2; exit 2 ;;
esac
[ "$MODE" = run ] && [ $# -gt 2 ] && { echo "usage: bash setup.sh run [--pair]" >&2; exit 2; }

RUN_PACKAGES=(openssl softhsm2 dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-pgsql dovecot-sieve
              dovecot-managesieved ca-certificates)
# Full-text search in Dovecot (mailstore/fts.py): the Xapian backend, and what reads the text of
# attached PDFs (pdftotext) and .odt/.docx files (unzip).
RUN_PACKAGES+=(dovecot-fts-xapian poppler-utils unzip)
# iproute2: `ss` (which process holds a connection) and `ip netns` (the several-hosts topology test)
TEST_PACKAGES=(postgresql chromium prometheus iproute2)
# Node runs the demo's Pro Santé Connect stand-in (standins/psc: oidc-provider from npm) and
# npm installs axe-core for the browser tests (tests/js). Debian's nodejs + npm unless an npm
# is already there: NodeSource's nodejs bundles its own npm and conflicts with Debian's package.
command -v npm >/dev/null || RUN_PACKAGES+=(nodejs npm)

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "missing Debian packages: ${missing[*]} (run as root)" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "== installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  # Debian's postinst scripts would start system-wide dovecot/postgresql/prometheus services: mss
  # runs its own (the tests only need prometheus's promtool).
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now dovecot.service postgresql.service prometheus.service >/dev/null 2>&1 || true
  fi
}

# As root, Dovecot's mail processes run as the unprivileged system user vmail (see mailstore/).
ensure_vmail() {
  if [ "$(id -u)" -eq 0 ] && ! id vmail >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin vmail
  fi
}

# Dovecot's unprivileged processes must traverse every parent of the data directory; a clone
# under /root (mode 0700) cannot host it, so root then defaults to /var/lib/mss.
default_data_dir() {
  local dir="$PWD"
  if [ "$(id -u)" -eq 0 ]; then
    while [ "$dir" != "/" ]; do
      if [ "$(( $(stat -c '%a' "$dir") % 2 ))" -eq 0 ]; then echo /var/lib/mss; return; fi
      dir="$(dirname "$dir")"
    done
  fi
  echo "$PWD/mss-data"
}

# JavaScript packages, exactly as their package-lock.json says (no network at run time).
npm_ci() {
  echo "== npm packages of $1 (from its package-lock.json)"
  (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
}

PYTHON="${PYTHON:-python3}"
make_venv() {
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv
      "$PYTHON" -m venv .venv
    fi
  fi
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$1"
}

if [ "$MODE" = run ]; then
  apt_install "${RUN_PACKAGES[@]}"
  ensure_vmail
  make_venv ""
  npm_ci standins/psc
  export MSS_DATA_DIR="${MSS_DATA_DIR:-$(default_data_dir)}"
  echo "== data directory: $MSS_DATA_DIR"
  if [ "$PAIR" = --pair ]; then
    exec .venv/bin/mss demo --pair  # autre.test in "$MSS_DATA_DIR-autre.test"
  fi
  .venv/bin/mss demo
  exec .venv/bin/mss run
fi

apt_install "${RUN_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_vmail
make_venv "[test]"
npm_ci standins/psc
npm_ci tests/js  # axe-core
echo "== lint"
.venv/bin/ruff check .
echo "== tests"
set +e
# Two processes (pytest-xdist), a module at a time each, so that one's waits (Dovecot, a
# browser, a delivery) are the other's CPU: 19-25 min on 2 cores, against 25-34 serially.
# "-n 0" among the arguments runs serially (a debugger, -x on the first failure in order).
# The 30 slowest tests at the end of the log: where the suite's time goes.
.venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=30 "${@:2}"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit $status
