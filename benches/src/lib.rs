//! Benchmarks of maas-vip: criterion micro-benchmarks in `benches/` and the side-by-side
//! proxy comparison against HAProxy in `compare.sh`. This library is empty on purpose.
