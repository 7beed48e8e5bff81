#!/bin/sh
# Runs fuzz targets for a given time each, one after another, niced (the machine is shared).
#
#   fuzz/run.sh TARGET SECONDS      one target
#   fuzz/run.sh all SECONDS         every target, SECONDS each
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz wants nightly features; on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them (set here unless already set).
# Corpora grow in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/ and the inputs of
# fuzz/regressions/<target>/); a crash is written to fuzz/artifacts/<target>/ and the run
# goes on with the next target. Per target, prints: execs, seconds, corpus size, findings.
# Exit status: 0 if no target found anything, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
targets="vrrp_packet arp_frame config keepalived_import haproxy_import http_response auth_hmac"
[ $# -eq 2 ] || { echo "usage: $0 TARGET|all SECONDS" >&2; exit 2; }
case $1 in
    all) run=$targets ;;
    *) run=$1 ;;
esac
secs=$2
export RUSTC_BOOTSTRAP=${RUSTC_BOOTSTRAP:-1}
command -v cargo-fuzz >/dev/null || {
    echo "$0: cargo-fuzz is not installed: cargo install cargo-fuzz (about 1.5 min)" >&2
    exit 2
}
cd "$here" || exit 2
[ -d seeds/vrrp_packet ] || ./seed.sh >/dev/null
# One build for all targets (debug assertions on, as cargo-fuzz does by default).
nice -n 19 cargo fuzz build ${FUZZ_BUILD_FLAGS:-} || exit 2
found=0
summary=""
for t in $run; do
    mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t" "logs"
    log=logs/$t.log
    before=$(ls "artifacts/$t" | wc -l)
    start=$(date +%s)
    # -max_total_time bounds the run; -rss_limit_mb and -timeout turn runaway memory or a hang
    # into findings instead of a stuck machine.
    dict=""
    [ -f "dict/$t.dict" ] && dict="-dict=dict/$t.dict"
    nice -n 19 cargo fuzz run ${FUZZ_BUILD_FLAGS:-} "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" $dict ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(ls "corpus/$t" | wc -l)
    after=$(ls "artifacts/$t" | wc -l)
    new=$((after - before))
    if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
        found=1
        status="FOUND (exit $rc, $new new artifact(s) in fuzz/artifacts/$t/; see fuzz/$log)"
        grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /'
    else
        status="no findings"
    fi
    line="$t: ${execs:-?} execs in ${took}s, corpus $corpus, $status"
    echo "$line"
    summary="$summary$line
"
done
printf '\n== summary ==\n%s' "$summary"
exit $found
