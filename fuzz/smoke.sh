#!/bin/sh
# CI smoke pass: every fuzz target for a short while (default 25 s each), corpora from the
# seeds only (a fresh checkout), failing on any finding. Needs cargo-fuzz installed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/run.sh" all "${1:-25}"
