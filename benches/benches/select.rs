//! Server selection cost: ns per pick, and proof that a pick does not allocate.
//!
//! `cargo bench -p maas-vip-benches --bench select`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use healthcheck::{Health, ServerState};
use lb::balance::{Algorithm, Pool, Tried};

/// Counts allocations so the bench can show that picking allocates nothing.
struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn pool(alg: Algorithm, n: usize) -> Pool {
    Pool::new(
        alg,
        (0..n)
            .map(|i| {
                let s = ServerState::new(
                    format!("maas-api-{i}"),
                    SocketAddr::from(([10, 0, 0, 11 + i as u8], 5240)),
                    false,
                );
                (Arc::new(s), 1, false)
            })
            .collect(),
    )
}

fn assert_no_alloc(name: &str, p: &Pool) {
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..100_000u32 {
        black_box(p.pick(IpAddr::V4(Ipv4Addr::from(i)), Tried::default()));
    }
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    println!("{name}: {n} allocations in 100000 picks");
    assert_eq!(n, 0, "{name} allocates");
}

fn bench(c: &mut Criterion) {
    for (alg, label) in [
        (Algorithm::RoundRobin, "roundrobin"),
        (Algorithm::Source, "source"),
    ] {
        for n in [3usize, 10] {
            let p = pool(alg, n);
            assert_no_alloc(&format!("{label}/{n}"), &p);
            let mut i = 0u32;
            c.bench_function(&format!("pick/{label}/{n} servers"), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(p.pick(IpAddr::V4(Ipv4Addr::from(i)), Tried::default()))
                })
            });
            // One server down: the pick skips it.
            p.members()[0].state.set_health(Health::Down);
            c.bench_function(&format!("pick/{label}/{n} servers, one down"), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(p.pick(IpAddr::V4(Ipv4Addr::from(i)), Tried::default()))
                })
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
