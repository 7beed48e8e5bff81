//! Server selection: smooth weighted round robin and a consistent hash of the client address.
//!
//! A [`Pool`] is immutable once built (a reload builds a new one and swaps it in), so picking a
//! server reads atomics only: no lock, no allocation.
//!
//! - Round robin walks a precomputed smooth weighted schedule (nginx's algorithm: weights 5,1,1
//!   give `a a b a c a a`, never `a a a a a b c`) with a single atomic cursor. An entry whose
//!   server is not available is skipped by taking the next cursor position, so its share is
//!   spread over the others.
//! - Source uses weighted rendezvous hashing: every server scores `weight / -ln(u)` with `u`
//!   drawn from a fixed hash of (server hash key, client address); the best score wins. The
//!   hash key is the server's address as the config writes it (`10.0.0.11:5240`,
//!   `maas-api-1.example:5240`) or its `hash_key`, never its name: the names are per host (the
//!   MAAS guide calls every host's own region `localhost`), the addresses are the same on every
//!   host. The result depends only on the keys and weights, never on their order or on the
//!   host computing it, and a server going down moves only the clients it had.
//! - First takes the first available server in config order (HAProxy's `balance first`,
//!   without its per-server `maxconn`, which maas-vip servers do not have): all connections
//!   go to one server, the next one takes over only when it is down. For a database whose
//!   standbys refuse writes, so that writes never split, and during a split brain (two
//!   primaries) the one listed first wins everywhere.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use healthcheck::ServerState;

/// Servers already tried for one connection: bit `i` for server `i` (servers past 64 are never
/// marked, so they may be retried; MAAS has a handful of regions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    /// Marks server `i` as tried.
    pub fn mark(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }

    /// Whether server `i` was tried.
    pub fn has(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }
}

/// One server as the balancer sees it.
#[derive(Debug)]
pub struct Member {
    /// Shared state (availability, counters).
    pub state: Arc<ServerState>,
    /// Weight 0..=256.
    pub weight: u32,
    /// Only used while no primary server is available.
    pub backup: bool,
    key_hash: u64,
}

/// How a [`Pool`] picks a server: the config's `balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Weighted rendezvous hash of the client address.
    Source,
    /// The first available server in config order.
    First,
}

/// The servers of one frontend and the precomputed tables to pick among them.
#[derive(Debug)]
pub struct Pool {
    members: Vec<Member>,
    algorithm: Algorithm,
    /// Smooth weighted order of the primary servers (indexes into `members`).
    schedule: Box<[u16]>,
    /// The same for backup servers.
    backup_schedule: Box<[u16]>,
    cursor: AtomicUsize,
}

impl Pool {
    /// Builds a pool; `servers` gives (state, weight, backup) in config order. The hash key of
    /// each is its address as written ([`healthcheck::Target`]).
    pub fn new(algorithm: Algorithm, servers: Vec<(Arc<ServerState>, u32, bool)>) -> Pool {
        Pool::keyed(
            algorithm,
            servers
                .into_iter()
                .map(|(state, weight, backup)| (state.target().to_string(), state, weight, backup))
                .collect(),
        )
    }

    /// Builds a pool; `servers` gives (hash key, state, weight, backup) in config order.
    pub fn keyed(
        algorithm: Algorithm,
        servers: Vec<(String, Arc<ServerState>, u32, bool)>,
    ) -> Pool {
        let members: Vec<Member> = servers
            .into_iter()
            .map(|(key, state, weight, backup)| Member {
                key_hash: fnv1a(key.as_bytes()),
                state,
                weight: weight.min(256),
                backup,
            })
            .collect();
        let schedule = smooth_schedule(&members, false);
        let backup_schedule = smooth_schedule(&members, true);
        Pool {
            members,
            algorithm,
            schedule,
            backup_schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The servers in config order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Picks a server for a connection from `client`, skipping unavailable and `tried` ones.
    /// Falls back to backup servers, then to an available server already tried (a retry of the
    /// same server beats giving up), and returns `None` only when no server is available.
    #[inline]
    pub fn pick(&self, client: IpAddr, tried: Tried) -> Option<usize> {
        let pick = |backup: bool, tried: Tried| match self.algorithm {
            Algorithm::RoundRobin => self.pick_rr(backup, tried),
            Algorithm::Source => self.pick_hash(client, backup, tried),
            Algorithm::First => self.pick_first(backup, tried),
        };
        pick(false, tried)
            .or_else(|| pick(true, tried))
            .or_else(|| {
                if tried == Tried::default() {
                    None
                } else {
                    pick(false, Tried::default())
                }
            })
            .or_else(|| {
                if tried == Tried::default() {
                    None
                } else {
                    pick(true, Tried::default())
                }
            })
    }

    fn pick_rr(&self, backup: bool, tried: Tried) -> Option<usize> {
        let schedule = if backup {
            &self.backup_schedule
        } else {
            &self.schedule
        };
        let len = schedule.len();
        if len == 0 {
            return None;
        }
        // A skipped entry consumes a cursor position of its own, so the turns of an
        // unavailable server spread over the others instead of all going to its successor.
        for _ in 0..len {
            let pos = self.cursor.fetch_add(1, Ordering::Relaxed);
            let i = usize::from(schedule[pos % len]);
            if !tried.has(i) && self.members[i].state.is_available() {
                return Some(i);
            }
        }
        None
    }

    fn pick_first(&self, backup: bool, tried: Tried) -> Option<usize> {
        self.members.iter().enumerate().position(|(i, m)| {
            m.backup == backup && m.weight > 0 && !tried.has(i) && m.state.is_available()
        })
    }

    fn pick_hash(&self, client: IpAddr, backup: bool, tried: Tried) -> Option<usize> {
        let key = client_hash(client);
        let mut best: Option<(f64, usize)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.backup != backup || m.weight == 0 || tried.has(i) || !m.state.is_available() {
                continue;
            }
            let score = rendezvous_score(m.key_hash, key, m.weight);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

/// nginx's smooth weighted round robin, unrolled into one period of `sum(weights)` picks.
fn smooth_schedule(members: &[Member], backup: bool) -> Box<[u16]> {
    let chosen: Vec<(usize, i64)> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.backup == backup && m.weight > 0)
        .map(|(i, m)| (i, i64::from(m.weight)))
        .collect();
    let total: i64 = chosen.iter().map(|(_, w)| w).sum();
    let mut current = vec![0i64; chosen.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, (_, w)) in chosen.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        // Indexes fit: a frontend has far fewer than 65536 servers (validated in config).
        out.push(u16::try_from(chosen[best].0).unwrap_or(u16::MAX));
    }
    out.into_boxed_slice()
}

/// FNV-1a, 64 bits: stable across hosts, versions and runs (unlike std's SipHash keys).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The key of a client: a hash of its whole address, for IPv6 too (not of its /64).
///
/// HAProxy's `balance source` hashes the whole IPv6 address, and so a config imported from it
/// spreads clients the same way. A /64 would keep a host on its region across a change of
/// its RFC 8981 temporary address, but it would put a whole subnet on one region: the rack
/// controllers and machines that talk to a MAAS region mostly share the one /64 of the region
/// network, so hashing the prefix would send all of them to a single region. MAAS keeps
/// sessions in PostgreSQL, so a client that changes its address loses nothing but a warm
/// connection.
///
/// An IPv4-mapped address (`::ffff:a.b.c.d`, an IPv4 client of a dual-stack listener) hashes
/// as the IPv4 address: the same client lands on the same region on either listener.
fn client_hash(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => fmix64(fnv1a(&v4.octets())),
        IpAddr::V6(v6) => fmix64(fnv1a(&v6.octets())),
    }
}

/// Weighted rendezvous score: `weight / -ln(u)`, `u` uniform in (0, 1) from the two hashes.
#[inline]
fn rendezvous_score(server_hash: u64, key: u64, weight: u32) -> f64 {
    let h = fmix64(server_hash ^ key.rotate_left(17));
    // 53 random bits, shifted off zero so ln() stays finite.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use healthcheck::{Admin, Health, Resolution, Target};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    /// A server named `name` at `name:5240`, resolved.
    fn state(name: &str) -> Arc<ServerState> {
        resolved(ServerState::with_target(
            name,
            Target::Name {
                host: name.into(),
                port: 5240,
            },
            false,
        ))
    }

    fn resolved(s: ServerState) -> Arc<ServerState> {
        s.set_resolution(Resolution::fixed(SocketAddr::from(([127, 0, 0, 1], 1))));
        Arc::new(s)
    }

    fn pool(alg: Algorithm, spec: &[(&str, u32)]) -> Pool {
        Pool::new(
            alg,
            spec.iter().map(|(n, w)| (state(n), *w, false)).collect(),
        )
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn first_takes_the_first_available_in_config_order() {
        let p = pool(Algorithm::First, &[("b", 1), ("a", 5), ("c", 1)]);
        for i in 0..20 {
            assert_eq!(p.pick(ip(i), Tried::default()), Some(0), "never split");
        }
        p.members()[0].state.set_health(Health::Down);
        assert_eq!(p.pick(ip(1), Tried::default()), Some(1));
        let mut tried = Tried::default();
        tried.mark(1);
        assert_eq!(
            p.pick(ip(1), tried),
            Some(2),
            "a retry goes to the next one"
        );
        p.members()[0].state.set_health(Health::Up);
        assert_eq!(
            p.pick(ip(1), Tried::default()),
            Some(0),
            "back to the first"
        );
        let p = pool(Algorithm::First, &[("a", 0), ("b", 1)]);
        assert_eq!(
            p.pick(ip(1), Tried::default()),
            Some(1),
            "weight 0 takes nothing"
        );
    }

    #[test]
    fn round_robin_equal_weights_is_even() {
        let p = pool(Algorithm::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
        let mut n = [0; 3];
        for _ in 0..30 {
            n[p.pick(ip(1), Tried::default()).expect("a server")] += 1;
        }
        assert_eq!(n, [10, 10, 10]);
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let p = pool(Algorithm::RoundRobin, &[("a", 5), ("b", 1), ("c", 1)]);
        let seq: Vec<usize> = (0..7)
            .map(|_| p.pick(ip(1), Tried::default()).expect("a server"))
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let p = pool(Algorithm::RoundRobin, &[("a", 3), ("b", 2), ("c", 0)]);
        let mut n = [0; 3];
        for _ in 0..500 {
            n[p.pick(ip(1), Tried::default()).expect("a server")] += 1;
        }
        assert_eq!(n, [300, 200, 0]);
    }

    #[test]
    fn round_robin_skips_down_and_tried_servers() {
        let p = pool(Algorithm::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
        p.members()[1].state.set_health(Health::Down);
        let mut n = [0; 3];
        for _ in 0..30 {
            n[p.pick(ip(1), Tried::default()).expect("a server")] += 1;
        }
        assert_eq!(n[1], 0);
        assert_eq!(n[0] + n[2], 30);
        let mut tried = Tried::default();
        tried.mark(0);
        assert_eq!(p.pick(ip(1), tried), Some(2));
        // Every available server tried: a retry of one of them beats no server.
        tried.mark(2);
        assert!(matches!(p.pick(ip(1), tried), Some(0) | Some(2)));
        p.members()[0].state.set_admin(Admin::Drain);
        p.members()[2].state.set_admin(Admin::Maint);
        assert_eq!(p.pick(ip(1), Tried::default()), None);
    }

    #[test]
    fn a_down_servers_share_is_spread_evenly() {
        let p = pool(Algorithm::RoundRobin, &[("a", 1), ("b", 1), ("c", 1)]);
        p.members()[2].state.set_health(Health::Down);
        let mut n = [0; 3];
        for _ in 0..30 {
            n[p.pick(ip(1), Tried::default()).expect("a server")] += 1;
        }
        assert_eq!(n, [15, 15, 0]);
    }

    #[test]
    fn backup_used_only_when_primaries_are_out() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            vec![(state("a"), 1, false), (state("bk"), 1, true)],
        );
        for _ in 0..5 {
            assert_eq!(p.pick(ip(1), Tried::default()), Some(0));
        }
        p.members()[0].state.set_health(Health::Down);
        assert_eq!(p.pick(ip(1), Tried::default()), Some(1));
    }

    #[test]
    fn source_is_sticky_and_spread() {
        let p = pool(Algorithm::Source, &[("r1", 1), ("r2", 1), ("r3", 1)]);
        let mut n = [0; 3];
        for i in 0..3000 {
            let first = p.pick(ip(i), Tried::default()).expect("a server");
            for _ in 0..3 {
                assert_eq!(p.pick(ip(i), Tried::default()), Some(first));
            }
            n[first] += 1;
        }
        for c in n {
            assert!((850..=1150).contains(&c), "uneven spread {n:?}");
        }
    }

    #[test]
    fn source_ignores_server_order() {
        let a = pool(Algorithm::Source, &[("r1", 1), ("r2", 2), ("r3", 1)]);
        let b = pool(Algorithm::Source, &[("r3", 1), ("r1", 1), ("r2", 2)]);
        for i in 0..2000 {
            let na = &a.members()[a.pick(ip(i), Tried::default()).expect("a")]
                .state
                .name;
            let nb = &b.members()[b.pick(ip(i), Tried::default()).expect("b")]
                .state
                .name;
            assert_eq!(na, nb);
        }
    }

    #[test]
    fn source_moves_only_the_lost_servers_clients() {
        let n = 5;
        let names: Vec<String> = (0..n).map(|i| format!("region-{i}")).collect();
        let spec: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
        let p = pool(Algorithm::Source, &spec);
        let keys = 10_000;
        let before: Vec<usize> = (0..keys)
            .map(|i| p.pick(ip(i), Tried::default()).expect("a server"))
            .collect();
        p.members()[2].state.set_health(Health::Down);
        let mut moved = 0usize;
        for (i, &b) in before.iter().enumerate() {
            let after = p.pick(ip(i as u32), Tried::default()).expect("a server");
            if b == 2 {
                assert_ne!(after, 2);
                moved += 1;
            } else {
                assert_eq!(after, b, "a client of a live server moved");
            }
        }
        // About 1/N of the keys belonged to the lost server.
        let expected = keys as usize / n;
        assert!(moved.abs_diff(expected) < expected / 5, "moved {moved}");
        // Coming back, each client returns to where it was.
        p.members()[2].state.set_health(Health::Up);
        for (i, &b) in before.iter().enumerate() {
            assert_eq!(p.pick(ip(i as u32), Tried::default()), Some(b));
        }
    }

    #[test]
    fn source_honours_weights() {
        let p = pool(Algorithm::Source, &[("a", 3), ("b", 1)]);
        let mut n = [0; 2];
        for i in 0..8000 {
            n[p.pick(ip(i), Tried::default()).expect("a server")] += 1;
        }
        // Weighted rendezvous: shares proportional to weights (6000 / 2000 expected).
        assert!((5700..=6300).contains(&n[0]), "{n:?}");
    }

    /// Clients 10.0.0.0..=10.0.0.7 over hash keys maas-api-1..3, as computed by the first
    /// release (which keyed on server names).
    const PINNED: [&str; 8] = [
        "maas-api-3",
        "maas-api-2",
        "maas-api-1",
        "maas-api-2",
        "maas-api-3",
        "maas-api-1",
        "maas-api-2",
        "maas-api-1",
    ];

    /// A source pool whose servers have these hash keys (named `other-<key>`, so that a key
    /// taken from the name would show): the first release's keys were the server names.
    fn keyed(keys: &[&str]) -> Pool {
        Pool::keyed(
            Algorithm::Source,
            keys.iter()
                .map(|k| (k.to_string(), state(&format!("other-{k}")), 1, false))
                .collect(),
        )
    }

    /// The hash key of member `i` of a [`keyed`] pool.
    fn key_of(p: &Pool, i: usize) -> String {
        p.members()[i].state.name["other-".len()..].to_string()
    }

    #[test]
    fn source_mapping_is_fixed_across_builds() {
        // A fixed expectation guards against a hash change that would remap every client
        // when hosts run different versions.
        // The same hash as then: `hash_key = "<the old name>"` keeps a client's region across
        // the upgrade.
        let p = keyed(&["maas-api-1", "maas-api-2", "maas-api-3"]);
        let got: Vec<usize> = (0..8)
            .map(|i| p.pick(ip(i), Tried::default()).expect("a server"))
            .collect();
        let again = keyed(&["maas-api-3", "maas-api-1", "maas-api-2"]);
        let names =
            |p: &Pool, v: &[usize]| -> Vec<String> { v.iter().map(|&i| key_of(p, i)).collect() };
        let got_again: Vec<usize> = (0..8)
            .map(|i| again.pick(ip(i), Tried::default()).expect("a server"))
            .collect();
        assert_eq!(names(&p, &got), names(&again, &got_again));
        assert_eq!(names(&p, &got), PINNED);
    }

    #[test]
    fn source_hashes_addresses_not_names() {
        // Host A calls its own region `localhost` and the others by address; host B the same
        // regions by other names: each client lands on the same address from both hosts.
        let at = |name: &str, addr: &str| {
            let t = Target::parse(addr).expect("address");
            (resolved(ServerState::with_target(name, t, false)), 1, false)
        };
        let a = Pool::new(
            Algorithm::Source,
            vec![
                at("localhost", "10.0.0.11:5240"),
                at("maas-api-2", "10.0.0.12:5240"),
                at("maas-api-3", "region-3.example:5240"),
            ],
        );
        let b = Pool::new(
            Algorithm::Source,
            vec![
                at("r3", "region-3.example:5240"),
                at("r1", "10.0.0.11:5240"),
                at("localhost", "10.0.0.12:5240"),
            ],
        );
        let addr = |p: &Pool, i: u32| {
            p.members()[p.pick(ip(i), Tried::default()).expect("a server")]
                .state
                .target()
                .to_string()
        };
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            assert_eq!(addr(&a, i), addr(&b, i), "client {i}");
            seen.insert(addr(&a, i));
        }
        assert_eq!(seen.len(), 3, "spread over all three");
        // An explicit key wins over the address.
        let keyed = Pool::keyed(
            Algorithm::Source,
            vec![
                ("k1".into(), state("x1"), 1, false),
                ("k2".into(), state("x2"), 1, false),
            ],
        );
        let renamed = Pool::keyed(
            Algorithm::Source,
            vec![
                ("k2".into(), state("y2"), 1, false),
                ("k1".into(), state("y1"), 1, false),
            ],
        );
        for i in 0..200 {
            let k = |p: &Pool| p.pick(ip(i), Tried::default()).expect("a server");
            assert_eq!(
                keyed.members()[k(&keyed)].state.name[1..],
                renamed.members()[k(&renamed)].state.name[1..]
            );
        }
    }

    #[test]
    fn ipv4_mapped_clients_hash_like_ipv4() {
        let v4 = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(
            client_hash(IpAddr::V4(v4)),
            client_hash(IpAddr::V6(v4.to_ipv6_mapped()))
        );
        // And pick alike, for every client: a dual-stack listener changes nobody's region.
        let p = pool(Algorithm::Source, &[("r1", 1), ("r2", 1), ("r3", 1)]);
        for i in 0..500 {
            let IpAddr::V4(v4) = ip(i) else {
                unreachable!("ip() gives IPv4")
            };
            assert_eq!(
                p.pick(IpAddr::V4(v4), Tried::default()),
                p.pick(IpAddr::V6(v4.to_ipv6_mapped()), Tried::default())
            );
        }
        // The IPv4-compatible form (::a.b.c.d, deprecated) is an IPv6 address of its own.
        assert_ne!(
            client_hash(IpAddr::V4(v4)),
            client_hash(IpAddr::V6(v4.to_ipv6_compatible()))
        );
    }

    fn ip6(i: u32) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ))
    }

    #[test]
    fn ipv6_source_hashes_the_whole_address() {
        let p = pool(Algorithm::Source, &[("r1", 1), ("r2", 1), ("r3", 1)]);
        let mut n = [0; 3];
        // 3000 clients of one /64 (a MAAS region network): spread, each one sticky.
        for i in 0..3000 {
            let first = p.pick(ip6(i), Tried::default()).expect("a server");
            assert_eq!(p.pick(ip6(i), Tried::default()), Some(first));
            n[first] += 1;
        }
        for c in n {
            assert!(
                (850..=1150).contains(&c),
                "uneven spread over one /64: {n:?}"
            );
        }
        // Every byte counts, the interface identifier's last one too.
        let a: Ipv6Addr = "2001:db8::1".parse().expect("v6");
        let b: Ipv6Addr = "2001:db8::2".parse().expect("v6");
        assert_ne!(client_hash(IpAddr::V6(a)), client_hash(IpAddr::V6(b)));
    }

    /// Clients 2001:db8::0..=7 over hash keys maas-api-1..3: pinned like [`PINNED`], so that a change of
    /// the IPv6 key (to a /64, say) shows.
    const PINNED6: [&str; 8] = [
        "maas-api-1",
        "maas-api-2",
        "maas-api-1",
        "maas-api-1",
        "maas-api-3",
        "maas-api-3",
        "maas-api-2",
        "maas-api-3",
    ];

    #[test]
    fn ipv6_source_mapping_is_fixed_across_builds() {
        let p = keyed(&["maas-api-1", "maas-api-2", "maas-api-3"]);
        let got: Vec<String> = (0..8)
            .map(|i| p.pick(ip6(i), Tried::default()).expect("a server"))
            .map(|i| key_of(&p, i))
            .collect();
        assert_eq!(got, PINNED6);
    }
}
