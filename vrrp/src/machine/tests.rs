//! A simulated LAN of N routers: the harness owns the clock, loss and partitions, steps the
//! machines until idle and checks states and elapsed times exactly.

use super::*;
use crate::packet::MULTICAST_V4;

const SEC: Duration = Duration::from_secs(1);

fn params(priority: u8, last_octet: u8) -> Params {
    Params {
        vrid: 51,
        version: Version::V2,
        primary: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)),
        start_as_master: false,
        settings: Settings {
            priority,
            advert_interval: SEC,
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth_pass: Some(b"s3cret".to_vec()),
            vips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
            garp_delay: Duration::from_secs(5),
            garp_refresh: Duration::ZERO,
            unicast_peers: Vec::new(),
            v3_checksum: V3Checksum::default(),
        },
    }
}

fn skew(prio: u32) -> Duration {
    SEC * (256 - prio) / 256
}

fn mdi(prio: u32) -> Duration {
    3 * SEC + skew(prio)
}

struct Router {
    m: Machine,
    alive: bool,
    holds_vips: bool,
    garp_bursts: u32,
    /// Times of the `garp_master_refresh` bursts.
    garp_refreshes: Vec<Instant>,
    vips_changed: Vec<(Vec<IpAddr>, Vec<IpAddr>)>,
    adverts: Vec<(Instant, u8)>,
    transitions: Vec<(Instant, State, Reason)>,
}

struct Sim {
    t0: Instant,
    now: Instant,
    r: Vec<Router>,
    /// blocked[from][to]
    blocked: Vec<Vec<bool>>,
    /// Probability in 0..=1000 per mille that one delivery is lost.
    loss_permille: u64,
    rng: u64,
    /// (time, number of masters) after every step.
    history: Vec<(Instant, usize)>,
}

impl Sim {
    fn new(ps: Vec<Params>) -> Sim {
        let t0 = Instant::now();
        let n = ps.len();
        Sim {
            t0,
            now: t0,
            r: ps
                .into_iter()
                .map(|p| Router {
                    m: Machine::new(p),
                    alive: false,
                    holds_vips: false,
                    garp_bursts: 0,
                    garp_refreshes: Vec::new(),
                    vips_changed: Vec::new(),
                    adverts: Vec::new(),
                    transitions: Vec::new(),
                })
                .collect(),
            blocked: vec![vec![false; n]; n],
            loss_permille: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            history: Vec::new(),
        }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn random_lost(&mut self) -> bool {
        // xorshift64: deterministic, so a failure replays.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 1000 < self.loss_permille
    }

    fn start(&mut self, i: usize) {
        self.r[i].alive = true;
        let now = self.now;
        self.r[i].m.start(now);
        self.flush();
    }

    /// kill -9: the router says nothing more.
    fn kill(&mut self, i: usize) {
        self.r[i].alive = false;
    }

    /// SIGTERM.
    fn stop(&mut self, i: usize) {
        let now = self.now;
        self.r[i].m.shutdown(now);
        self.flush();
        self.r[i].alive = false;
    }

    fn flush(&mut self) {
        loop {
            let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
            for i in 0..self.r.len() {
                while let Some(a) = self.r[i].m.poll_action() {
                    let r = &mut self.r[i];
                    match a {
                        Action::SendAdvert { priority } => {
                            let pair = IpPair {
                                src: r.m.params().primary,
                                dst: IpAddr::V4(MULTICAST_V4),
                            };
                            r.adverts.push((self.now, priority));
                            sent.push((i, r.m.advert(priority).to_bytes(&pair)));
                        }
                        Action::AddVips => r.holds_vips = true,
                        Action::RemoveVips => r.holds_vips = false,
                        Action::SendGarp => r.garp_bursts += 1,
                        Action::RefreshGarp => r.garp_refreshes.push(self.now),
                        Action::VipsChanged { added, removed } => {
                            r.vips_changed.push((added, removed));
                            r.garp_bursts += 1;
                        }
                        Action::StateChanged { to, reason, .. } => {
                            r.transitions.push((self.now, to, reason))
                        }
                    }
                }
            }
            if sent.is_empty() {
                break;
            }
            for (from, bytes) in sent {
                for to in 0..self.r.len() {
                    if to == from || !self.r[to].alive || self.blocked[from][to] {
                        continue;
                    }
                    if self.random_lost() {
                        continue;
                    }
                    let meta = RxMeta {
                        src: self.r[from].m.params().primary,
                        dst: IpAddr::V4(MULTICAST_V4),
                        ttl: 255,
                    };
                    let now = self.now;
                    self.r[to]
                        .m
                        .handle_packet(now, meta, &bytes)
                        .expect("adverts between our routers are valid");
                }
            }
        }
        let masters = self.masters().len();
        self.history.push((self.now, masters));
    }

    fn run_until(&mut self, t: Instant) {
        loop {
            self.flush();
            let next = self
                .r
                .iter()
                .filter(|r| r.alive)
                .filter_map(|r| r.m.poll_timeout())
                .min();
            match next {
                Some(n) if n <= t => {
                    self.now = self.now.max(n);
                    let now = self.now;
                    for r in self.r.iter_mut().filter(|r| r.alive) {
                        r.m.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = t;
        self.flush();
    }

    fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.r.len())
            .filter(|i| self.r[*i].alive && self.r[*i].m.state() == State::Master)
            .collect()
    }

    fn vip_holders(&self) -> Vec<usize> {
        (0..self.r.len())
            .filter(|i| self.r[*i].alive && self.r[*i].holds_vips)
            .collect()
    }

    /// When router `i` last became master.
    fn became_master(&self, i: usize) -> Option<(Instant, Reason)> {
        self.r[i]
            .transitions
            .iter()
            .rev()
            .find(|(_, s, _)| *s == State::Master)
            .map(|(t, _, r)| (*t, *r))
    }

    fn last_advert(&self, i: usize) -> Instant {
        self.r[i].adverts.last().expect("it has sent adverts").0
    }

    fn partition(&mut self, side: &[usize]) {
        let n = self.r.len();
        for a in 0..n {
            for b in 0..n {
                self.blocked[a][b] = side.contains(&a) != side.contains(&b);
            }
        }
    }

    fn heal(&mut self) {
        for row in &mut self.blocked {
            row.fill(false);
        }
    }

    /// Last time the number of masters was not exactly one, after `since`.
    fn last_time_not_single_master(&self, since: Instant) -> Option<Instant> {
        self.history
            .iter()
            .filter(|(t, n)| *t >= since && *n != 1)
            .map(|(t, _)| *t)
            .next_back()
    }
}

fn three() -> Sim {
    Sim::new(vec![params(100, 1), params(150, 2), params(200, 3)])
}

fn started_three() -> Sim {
    let mut s = three();
    for i in 0..3 {
        s.start(i);
    }
    s.run_for(10 * SEC);
    s
}

#[test]
fn election_highest_priority_wins_after_its_master_down_interval() {
    let mut s = three();
    for i in 0..3 {
        s.start(i);
    }
    s.run_for(20 * SEC);
    assert_eq!(s.masters(), vec![2]);
    assert_eq!(s.vip_holders(), vec![2]);
    let (t, reason) = s.became_master(2).expect("r2 is master");
    // RFC 3768 §6.4.1 + §6.4.2: every router starts Backup; the highest priority has the
    // shortest Skew_Time, so its Master_Down_Timer fires first.
    assert_eq!(t - s.t0, mdi(200));
    assert_eq!(reason, Reason::MasterDown);
    assert_eq!(s.r[0].m.state(), State::Backup);
    assert_eq!(s.r[1].m.state(), State::Backup);
    assert!(s.r[2].garp_bursts >= 2, "immediate and delayed GARP");
    // One advert per interval.
    let n = s.r[2].adverts.len();
    assert!((17..=18).contains(&n), "{n} adverts in ~16.8s");
}

#[test]
fn kill_master_backup_takes_over_after_master_down_interval() {
    let mut s = started_three();
    s.run_for(SEC / 2);
    let last = s.last_advert(2);
    s.kill(2);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, reason) = s.became_master(1).expect("r1 took over");
    // RFC 3768 §6.1: Master_Down_Interval after the last advert heard.
    assert_eq!(t - last, mdi(150));
    assert_eq!(reason, Reason::MasterDown);
    assert_eq!(s.r[0].m.state(), State::Backup);
    // Counted by the state entered: r1 went to BACKUP at start, then to MASTER.
    let t = s.r[1].m.stats().transitions;
    assert_eq!(t[State::Backup.index()], 1);
    assert_eq!(t[State::Master.index()], 1);
    assert_eq!(s.r[1].m.stats().became_master(), 1);
    assert_eq!(t[State::Fault.index()] + t[State::Initialize.index()], 0);
}

#[test]
fn sigterm_priority_zero_takeover_after_skew_time() {
    let mut s = started_three();
    s.run_for(SEC / 2);
    let stop_at = s.now;
    s.stop(2);
    assert_eq!(
        s.r[2].adverts.last().map(|a| a.1),
        Some(0),
        "priority 0 advert"
    );
    assert!(!s.r[2].holds_vips);
    assert_eq!(s.r[2].m.state(), State::Initialize);
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, reason) = s.became_master(1).expect("r1 took over");
    // RFC 3768 §6.4.2: priority 0 -> Master_Down_Timer = Skew_Time.
    assert_eq!(t - stop_at, skew(150));
    assert_eq!(reason, Reason::MasterStopped);
    // r0's shorter wait was reset by r1's first advert.
    assert_eq!(s.r[0].m.state(), State::Backup);
}

#[test]
fn master_answers_priority_zero_at_once() {
    let mut s = started_three();
    // A backup that stops sends nothing (only a master sends priority 0), so inject one.
    let before = s.r[2].adverts.len();
    let mut pz = s.r[1].m.advert(0);
    pz.priority = 0;
    let pair = IpPair {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        dst: IpAddr::V4(MULTICAST_V4),
    };
    let bytes = pz.to_bytes(&pair);
    let now = s.now;
    let meta = RxMeta {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        dst: IpAddr::V4(MULTICAST_V4),
        ttl: 255,
    };
    s.r[2].m.handle_packet(now, meta, &bytes).expect("valid");
    s.flush();
    assert_eq!(s.r[2].adverts.len(), before + 1);
    assert_eq!(s.r[2].adverts.last().map(|a| a.0), Some(now));
}

#[test]
fn preempt_on_higher_priority_takes_over() {
    let mut s = Sim::new(vec![params(100, 1), params(150, 2)]);
    s.start(0);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![0]);
    let join = s.now;
    s.start(1);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, reason) = s.became_master(1).expect("preempted");
    // RFC 3768 §6.4.2: lower-priority adverts are discarded, so Master_Down_Timer runs out.
    assert_eq!(t - join, mdi(150));
    assert!(
        matches!(reason, Reason::Preempt { priority: 100, .. }),
        "{reason:?}"
    );
    assert_eq!(s.r[0].m.state(), State::Backup);
    assert_eq!(s.vip_holders(), vec![1]);
}

#[test]
fn preempt_off_never_takes_over() {
    let mut p1 = params(150, 2);
    p1.settings.preempt = false;
    let mut s = Sim::new(vec![params(100, 1), p1]);
    s.start(0);
    s.run_for(10 * SEC);
    s.start(1);
    s.run_for(120 * SEC);
    assert_eq!(s.masters(), vec![0]);
    assert_eq!(s.r[1].m.state(), State::Backup);
    // ...but takes over when the master dies.
    s.kill(0);
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![1]);
}

#[test]
fn preempt_delay_waits_then_takes_over() {
    let mut p1 = params(150, 2);
    p1.settings.preempt_delay = 5 * SEC;
    let mut s = Sim::new(vec![params(100, 1), p1]);
    s.start(0);
    s.run_for(10 * SEC);
    let join = s.now;
    s.start(1);
    s.run_for(30 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, reason) = s.became_master(1).expect("preempted");
    let waited = t - join;
    assert!(
        waited >= 5 * SEC && waited <= 6 * SEC,
        "preempted after {waited:?}"
    );
    assert!(matches!(reason, Reason::Preempt { priority: 100, .. }));
}

#[test]
fn owner_priority_255_claims_at_once() {
    let mut s = Sim::new(vec![params(200, 1), params(255, 2)]);
    s.start(0);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![0]);
    let join = s.now;
    s.start(1);
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.became_master(1).map(|m| m.0), Some(join));
    assert_eq!(s.became_master(1).map(|m| m.1), Some(Reason::Owner));
    assert_eq!(s.r[0].m.state(), State::Backup);
}

#[test]
fn equal_priority_higher_address_wins() {
    // Both start as master (keepalived `state MASTER`) at the same instant.
    let mut a = params(100, 1);
    let mut b = params(100, 2);
    a.start_as_master = true;
    b.start_as_master = true;
    let mut s = Sim::new(vec![a, b]);
    s.start(0);
    s.start(1);
    s.run_for(SEC);
    // RFC 3768 §6.4.3: equal priority, the greater primary address stays master.
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.vip_holders(), vec![1]);
    s.run_for(60 * SEC);
    assert_eq!(s.masters(), vec![1]);
}

#[test]
fn equal_priority_simultaneous_timers_resolve() {
    let mut s = Sim::new(vec![params(100, 1), params(100, 2), params(100, 3)]);
    for i in 0..3 {
        s.start(i);
    }
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![2]);
    let since = s.at(4 * SEC);
    assert_eq!(s.last_time_not_single_master(since), None);
}

#[test]
fn partition_and_heal_one_master_within_one_interval() {
    let mut s = started_three();
    assert_eq!(s.masters(), vec![2]);
    s.partition(&[2]);
    s.run_for(10 * SEC);
    // Split brain: both sides elected.
    assert_eq!(s.masters(), vec![1, 2]);
    let heal = s.now;
    s.heal();
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![2]);
    assert_eq!(s.vip_holders(), vec![2]);
    let last_bad = s.last_time_not_single_master(heal).unwrap_or(heal);
    assert!(
        last_bad - heal <= SEC,
        "two masters for {:?} after healing",
        last_bad - heal
    );
    // The lower master yielded to a higher-priority advert.
    assert!(matches!(
        s.r[1].transitions.last(),
        Some((
            _,
            State::Backup,
            Reason::HigherPriority { priority: 200, .. }
        ))
    ));
}

#[test]
fn partition_heal_when_lower_side_speaks_first() {
    // After healing, the first advert to cross may be the lower master's: the higher master
    // answers at once (split brain), so it still settles within one interval.
    let mut s = started_three();
    s.partition(&[2]);
    s.run_for(SEC * 10 + SEC / 3);
    let heal = s.now;
    s.heal();
    s.run_for(3 * SEC);
    assert_eq!(s.masters(), vec![2]);
    let last_bad = s.last_time_not_single_master(heal).unwrap_or(heal);
    assert!(last_bad - heal <= SEC, "{:?}", last_bad - heal);
}

#[test]
fn random_advert_loss_stays_mostly_single_master_and_recovers() {
    let mut s = started_three();
    s.loss_permille = 200;
    let from = s.now;
    s.run_for(600 * SEC);
    let samples: Vec<_> = s.history.iter().filter(|(t, _)| *t >= from).collect();
    let single = samples.iter().filter(|(_, n)| *n == 1).count();
    assert!(
        single * 100 >= samples.len() * 90,
        "single master in {single}/{} samples",
        samples.len()
    );
    s.loss_permille = 0;
    let clear = s.now;
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![2]);
    let last_bad = s.last_time_not_single_master(clear).unwrap_or(clear);
    assert!(last_bad - clear <= SEC);
}

#[test]
fn total_loss_then_recovery() {
    let mut s = started_three();
    s.loss_permille = 1000;
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![0, 1, 2], "every router alone claims");
    s.loss_permille = 0;
    let clear = s.now;
    s.run_for(3 * SEC);
    assert_eq!(s.masters(), vec![2]);
    assert!(s.last_time_not_single_master(clear).unwrap_or(clear) - clear <= SEC);
}

#[test]
fn track_fault_on_master_releases_and_backup_takes_over_after_skew() {
    let mut s = started_three();
    let at = s.now;
    s.r[2].m.set_tracking(at, 0, true);
    s.flush();
    assert_eq!(s.r[2].m.state(), State::Fault);
    assert!(!s.r[2].holds_vips);
    assert_eq!(
        s.r[2].adverts.last(),
        Some(&(at, 0)),
        "priority 0 on leaving"
    );
    let sent = s.r[2].adverts.len();
    s.run_for(10 * SEC);
    assert_eq!(s.r[2].adverts.len(), sent, "no adverts in FAULT");
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.became_master(1).map(|m| m.0 - at), Some(skew(150)));
    // Clearing the fault: Backup, then preemption of the lower master.
    let clear = s.now;
    s.r[2].m.set_tracking(clear, 0, false);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![2]);
    assert_eq!(s.became_master(2).map(|m| m.0 - clear), Some(mdi(200)));
    assert!(s.r[2]
        .transitions
        .iter()
        .any(|(_, st, r)| *st == State::Backup && *r == Reason::FaultCleared));
}

#[test]
fn link_down_master_goes_fault_silently() {
    let mut s = started_three();
    s.run_for(SEC / 4);
    let last = s.last_advert(2);
    let at = s.now;
    s.r[2].m.set_link(at, false);
    s.flush();
    assert_eq!(s.r[2].m.state(), State::Fault);
    assert!(!s.r[2].holds_vips);
    assert_eq!(
        s.r[2].adverts.last().map(|a| a.0),
        Some(last),
        "nothing sent on a dead link"
    );
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.became_master(1).map(|m| m.0 - last), Some(mdi(150)));
    let up = s.now;
    s.r[2].m.set_link(up, true);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![2]);
}

#[test]
fn fault_at_start_stays_fault() {
    let mut s = Sim::new(vec![params(100, 1)]);
    let now = s.now;
    s.r[0].m.set_link(now, false);
    s.start(0);
    s.run_for(10 * SEC);
    assert_eq!(s.r[0].m.state(), State::Fault);
    assert!(s.r[0].adverts.is_empty());
}

#[test]
fn track_weight_lowers_priority_and_lets_backup_preempt() {
    let mut s = started_three();
    let at = s.now;
    s.r[2].m.set_tracking(at, -100, false);
    assert_eq!(s.r[2].m.priority(), 100);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
}

#[test]
fn effective_priority_is_clamped() {
    let mut m = Machine::new(params(100, 1));
    let now = Instant::now();
    m.set_tracking(now, -200, false);
    assert_eq!(m.priority(), 1);
    m.set_tracking(now, 200, false);
    assert_eq!(m.priority(), 254);
    let mut owner = Machine::new(params(255, 1));
    owner.set_tracking(now, -50, false);
    assert_eq!(owner.priority(), 255);
}

#[test]
fn master_down_interval_matches_rfc() {
    let m = Machine::new(params(100, 1));
    assert_eq!(m.skew_time(), Duration::from_micros(609_375));
    assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    let mut p = params(100, 1);
    p.version = Version::V3;
    p.settings.auth_pass = None;
    p.settings.advert_interval = Duration::from_millis(100);
    let m = Machine::new(p);
    // RFC 9568 §6.1: Skew_Time = ((256 - priority) * Master_Adver_Interval) / 256.
    assert_eq!(m.skew_time(), Duration::from_nanos(60_937_500));
}

#[test]
fn v3_centisecond_election() {
    let ps = [100u8, 200]
        .iter()
        .enumerate()
        .map(|(i, prio)| {
            let mut p = params(*prio, i as u8 + 1);
            p.version = Version::V3;
            p.settings.auth_pass = None;
            p.settings.advert_interval = Duration::from_millis(100);
            p
        })
        .collect();
    let mut s = Sim::new(ps);
    s.start(0);
    s.start(1);
    s.run_for(2 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, _) = s.became_master(1).expect("elected");
    assert_eq!(
        t - s.t0,
        Duration::from_millis(300) + Duration::from_millis(100) * 56 / 256
    );
    let last = s.last_advert(1);
    s.kill(1);
    s.run_for(2 * SEC);
    assert_eq!(s.masters(), vec![0]);
    assert_eq!(
        s.became_master(0).map(|m| m.0 - last),
        Some(Duration::from_millis(300) + Duration::from_millis(100) * 156 / 256)
    );
}

/// A valid advert from 10.0.0.9 as a receiver with params(100, 1) expects it, to break.
fn good_advert() -> (RxMeta, Vec<u8>, Machine) {
    let m = Machine::new(params(100, 1));
    let sender = Machine::new(params(150, 9));
    let meta = RxMeta {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        dst: IpAddr::V4(MULTICAST_V4),
        ttl: 255,
    };
    let pair = IpPair {
        src: meta.src,
        dst: meta.dst,
    };
    (meta, sender.advert(150).to_bytes(&pair), m)
}

fn refix(bytes: &mut [u8], meta: RxMeta) {
    let pair = IpPair {
        src: meta.src,
        dst: meta.dst,
    };
    Packet::new_unchecked(bytes).fill_checksum(&pair);
}

#[test]
fn receive_checks_count_each_reason() {
    let now = Instant::now();
    let (meta, good, mut m) = good_advert();
    m.start(now);
    assert_eq!(m.handle_packet(now, meta, &good), Ok(()));

    let mut cases: Vec<(Reject, RxMeta, Vec<u8>)> = Vec::new();
    cases.push((
        Reject::Own,
        RxMeta {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            ..meta
        },
        good.clone(),
    ));
    cases.push((Reject::Ttl, RxMeta { ttl: 254, ..meta }, good.clone()));
    let mut b = good.clone();
    b[0] = 0x31;
    refix(&mut b, meta);
    cases.push((Reject::Version, meta, b));
    let mut b = good.clone();
    b[0] = 0x22;
    refix(&mut b, meta);
    cases.push((Reject::Type, meta, b));
    cases.push((Reject::Length, meta, good[..good.len() - 1].to_vec()));
    cases.push((Reject::Length, meta, good[..5].to_vec()));
    let mut b = good.clone();
    b[3] = 2;
    refix(&mut b, meta);
    cases.push((Reject::Length, meta, b));
    let mut b = good.clone();
    b[6] ^= 0xff;
    cases.push((Reject::Checksum, meta, b));
    let mut b = good.clone();
    b[1] = 52;
    refix(&mut b, meta);
    cases.push((Reject::Vrid, meta, b));
    let mut b = good.clone();
    b[4] = 0;
    refix(&mut b, meta);
    cases.push((Reject::AuthType, meta, b));
    let mut b = good.clone();
    b[12] = b'S';
    refix(&mut b, meta);
    cases.push((Reject::AuthPass, meta, b));
    let mut b = good.clone();
    b[5] = 2;
    refix(&mut b, meta);
    cases.push((Reject::Interval, meta, b));

    for (want, meta, bytes) in &cases {
        assert_eq!(m.handle_packet(now, *meta, bytes), Err(*want), "{want}");
    }
    for r in Reject::ALL {
        let n = cases.iter().filter(|c| c.0 == r).count() as u64;
        assert_eq!(m.stats().rejected(r), n, "{r}");
    }
    assert_eq!(m.stats().rx_ok, 1);
}

#[test]
fn differing_vip_list_is_accepted_and_counted() {
    let now = Instant::now();
    let (meta, _, mut m) = good_advert();
    let mut p = params(150, 9);
    p.settings
        .vips
        .push(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101)));
    let pair = IpPair {
        src: meta.src,
        dst: meta.dst,
    };
    let bytes = Machine::new(p).advert(150).to_bytes(&pair);
    m.start(now);
    assert_eq!(m.handle_packet(now, meta, &bytes), Ok(()));
    assert_eq!(m.stats().vip_mismatch, 1);
    assert_eq!(m.stats().rx_ok, 1);
}

#[test]
fn garbage_never_panics() {
    let now = Instant::now();
    let (meta, good, mut m) = good_advert();
    m.start(now);
    let mut rng: u64 = 1;
    for len in 0..64 {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if i < good.len() && rng.is_multiple_of(3) {
                        good[i]
                    } else {
                        rng as u8
                    }
                })
                .collect();
            let _ = m.handle_packet(now, meta, &bytes);
        }
    }
}

#[test]
fn shutdown_from_backup_sends_nothing() {
    let mut s = started_three();
    let sent = s.r[1].adverts.len();
    s.stop(1);
    assert_eq!(s.r[1].adverts.len(), sent);
    assert_eq!(s.r[1].m.state(), State::Initialize);
}

#[test]
fn unicast_mode_accepts_listed_peers_only() {
    let now = Instant::now();
    let (meta, good, _) = good_advert();
    let mut p = params(100, 1);
    p.settings.unicast_peers = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8))];
    let mut m = Machine::new(p.clone());
    m.start(now);
    assert_eq!(m.handle_packet(now, meta, &good), Err(Reject::NotPeer));
    assert_eq!(m.stats().rejected(Reject::NotPeer), 1);
    p.settings.unicast_peers.push(meta.src);
    let mut m = Machine::new(p);
    m.start(now);
    assert_eq!(m.handle_packet(now, meta, &good), Ok(()));
}

#[test]
fn stats_serialize_with_reason_names() {
    let mut st = Stats::default();
    st.rejected[Reject::AuthPass as usize] = 3;
    let v = serde_json::to_value(&st).expect("serializes");
    assert_eq!(v["rejected"]["auth_pass"], 3);
    assert_eq!(v["rejected"]["ttl"], 0);
    st.transitions[State::Backup.index()] = 2;
    let v = serde_json::to_value(&st).expect("serializes");
    assert_eq!(v["transitions"]["BACKUP"], 2);
    assert_eq!(v["transitions"]["FAULT"], 0);
    assert_eq!(
        State::ALL.map(State::index),
        [0, 1, 2, 3],
        "index() is the position in ALL"
    );
    assert_eq!(
        serde_json::to_value(State::Master).expect("state"),
        "MASTER"
    );
}

// Live reconfiguration (reload without restart).

/// Reconfigures router `i` with `f` applied to its current settings.
fn reconfigure(s: &mut Sim, i: usize, f: impl FnOnce(&mut Settings)) {
    let mut p = s.r[i].m.params().settings.clone();
    f(&mut p);
    let now = s.now;
    s.r[i].m.reconfigure(now, p);
    s.flush();
}

fn two_started() -> Sim {
    let mut s = Sim::new(vec![params(150, 1), params(120, 2)]);
    s.start(0);
    s.start(1);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![0]);
    s
}

#[test]
fn reconfigure_master_priority_below_backup_is_preempted_without_priority_zero() {
    let mut s = two_started();
    s.run_for(SEC / 4);
    let at = s.now;
    let adverts_before = s.r[0].adverts.len();
    reconfigure(&mut s, 0, |p| p.priority = 100);
    // Nothing at once: the next advert carries the new priority.
    assert_eq!(s.r[0].adverts.len(), adverts_before);
    assert_eq!(s.r[0].m.priority(), 100);
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.vip_holders(), vec![1]);
    let (t, reason) = s.became_master(1).expect("backup preempted");
    assert!(
        matches!(reason, Reason::Preempt { priority: 100, .. }),
        "{reason:?}"
    );
    // RFC 3768 §6.4.2: the backup discards the lower adverts; Master_Down_Timer was last
    // reset by the old master's last advert at 150, at most one interval before the change.
    assert!(t - at <= mdi(120), "took over after {:?}", t - at);
    assert!(t - at >= mdi(120) - SEC, "took over after {:?}", t - at);
    // The old master never said priority 0: it yielded to a higher advert.
    assert!(
        s.r[0].adverts.iter().all(|(_, p)| *p != 0),
        "{:?}",
        s.r[0].adverts
    );
    assert_eq!(s.r[0].m.state(), State::Backup);
    assert!(matches!(
        s.r[0].transitions.last(),
        Some((
            _,
            State::Backup,
            Reason::HigherPriority { priority: 120, .. }
        ))
    ));
}

#[test]
fn reconfigure_backup_priority_above_master_preempts_after_delay() {
    let mut s = two_started();
    let at = s.now;
    reconfigure(&mut s, 1, |p| {
        p.priority = 200;
        p.preempt_delay = 3 * SEC;
    });
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![1]);
    let (t, reason) = s.became_master(1).expect("preempted");
    // The next advert of the master (at most one interval) starts preempt_delay.
    let waited = t - at;
    assert!(
        waited >= 3 * SEC && waited <= 4 * SEC,
        "preempted after {waited:?}"
    );
    assert!(matches!(reason, Reason::Preempt { priority: 150, .. }));
}

#[test]
fn reconfigure_backup_priority_above_master_without_preempt_stays_backup() {
    let mut s = two_started();
    reconfigure(&mut s, 1, |p| {
        p.priority = 200;
        p.preempt = false;
    });
    s.run_for(30 * SEC);
    assert_eq!(s.masters(), vec![0]);
}

#[test]
fn reconfigure_preempt_off_cancels_a_pending_preemption() {
    let mut p1 = params(200, 2);
    p1.settings.preempt_delay = 10 * SEC;
    let mut s = Sim::new(vec![params(150, 1), p1]);
    s.start(0);
    s.run_for(10 * SEC);
    s.start(1);
    s.run_for(3 * SEC);
    assert_eq!(s.masters(), vec![0], "still within preempt_delay");
    reconfigure(&mut s, 1, |p| p.preempt = false);
    s.run_for(30 * SEC);
    assert_eq!(s.masters(), vec![0]);
    assert_eq!(s.r[1].m.state(), State::Backup);
}

#[test]
fn reconfigure_backup_priority_falling_below_a_preempted_master_follows_it() {
    // r1 (200) discards r0's (150) adverts to preempt it; its priority falls to 100 before
    // Master_Down_Timer runs out: no takeover.
    let mut s = Sim::new(vec![params(150, 1), params(200, 2)]);
    s.start(0);
    s.run_for(10 * SEC);
    s.start(1);
    s.run_for(2 * SEC);
    assert_eq!(s.masters(), vec![0]);
    reconfigure(&mut s, 1, |p| p.priority = 100);
    s.run_for(30 * SEC);
    assert_eq!(s.masters(), vec![0]);
    assert_eq!(s.r[1].m.state(), State::Backup);
}

#[test]
fn reconfigure_vips_while_master_adds_and_removes_at_once() {
    let mut s = two_started();
    let (a, b, c) = (
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 102)),
    );
    reconfigure(&mut s, 0, |p| p.vips = vec![a, b]);
    assert_eq!(s.r[0].vips_changed, vec![(vec![b], vec![])]);
    reconfigure(&mut s, 0, |p| p.vips = vec![b, c]);
    assert_eq!(s.r[0].vips_changed[1], (vec![c], vec![a]));
    // The backup is told nothing to do; it learns the list from the next advert (a different
    // list is counted, not dropped).
    reconfigure(&mut s, 1, |p| p.vips = vec![b, c]);
    assert!(s.r[1].vips_changed.is_empty());
    s.run_for(10 * SEC);
    assert_eq!(s.masters(), vec![0]);
    let ad = s.r[0].m.advert(150);
    assert_eq!(ad.addresses, vec![b, c]);
    assert_eq!(s.r[1].m.stats().vip_mismatch, 0);
    // Same list again: nothing to do.
    reconfigure(&mut s, 0, |p| p.vips = vec![b, c]);
    assert_eq!(s.r[0].vips_changed.len(), 2);
}

#[test]
fn reconfigure_advert_interval_applies_at_the_next_advert() {
    let mut s = Sim::new(vec![params(150, 1)]);
    s.start(0);
    s.run_for(10 * SEC);
    s.run_for(SEC / 2);
    let last = s.last_advert(0);
    reconfigure(&mut s, 0, |p| p.advert_interval = 3 * SEC);
    s.run_for(8 * SEC);
    let times: Vec<Duration> = s.r[0]
        .adverts
        .iter()
        .filter(|(t, _)| *t > last)
        .map(|(t, _)| *t - last)
        .collect();
    // The running Adver_Timer keeps its deadline (1s), the next ones are 3s apart.
    assert_eq!(times, vec![SEC, 4 * SEC, 7 * SEC]);
}

#[test]
fn reconfigure_password_is_checked_from_now_on() {
    let mut s = two_started();
    reconfigure(&mut s, 1, |p| p.auth_pass = Some(b"n3w".to_vec()));
    // r1 now drops r0's adverts (old password) and takes over: reload both together.
    let meta = RxMeta {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst: IpAddr::V4(MULTICAST_V4),
        ttl: 255,
    };
    let pair = IpPair {
        src: meta.src,
        dst: IpAddr::V4(MULTICAST_V4),
    };
    let old = s.r[0].m.advert(150).to_bytes(&pair);
    let now = s.now;
    assert_eq!(
        s.r[1].m.handle_packet(now, meta, &old),
        Err(Reject::AuthPass)
    );
    reconfigure(&mut s, 0, |p| p.auth_pass = Some(b"n3w".to_vec()));
    let new = s.r[0].m.advert(150).to_bytes(&pair);
    assert_eq!(s.r[1].m.handle_packet(now, meta, &new), Ok(()));
}

#[test]
fn reconfigure_keeps_the_router_and_its_primary() {
    let mut m = Machine::new(params(150, 1));
    let now = Instant::now();
    m.start(now);
    let mut set = params(100, 9).settings;
    set.vips = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101))];
    m.reconfigure(now, set);
    // The settings are taken; the router (vrid, version) and the primary address, which
    // the driver follows on the interface, stay the machine's own.
    assert_eq!(m.priority(), 100);
    assert_eq!(
        m.advert(m.priority()).addresses,
        [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101))]
    );
    assert_eq!(m.params().vrid, 51);
    assert_eq!(m.params().version, Version::V2);
    assert_eq!(m.params().primary, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn healed_partition_one_master_within_an_interval_and_garp_whichever_advert_crosses_first() {
    // Whatever the phase of the two masters' adverts when the partition heals, the winner
    // ends up re-sending gratuitous ARP within one interval: either it hears the loser's
    // advert, or the loser, yielding to it, sends one last advert of its own priority.
    for offset_ms in (0..1000).step_by(125) {
        let mut s = Sim::new(vec![params(150, 1), params(120, 2)]);
        s.start(0);
        s.start(1);
        s.run_for(10 * SEC);
        s.partition(&[0]);
        s.run_for(10 * SEC + Duration::from_millis(offset_ms));
        assert_eq!(s.masters(), vec![0, 1]);
        let garp_before = s.r[0].garp_bursts;
        let healed = s.now;
        s.heal();
        s.run_for(SEC + SEC / 10);
        assert_eq!(s.masters(), vec![0], "offset {offset_ms} ms");
        assert_eq!(s.vip_holders(), vec![0]);
        let single = s
            .last_time_not_single_master(healed)
            .map(|t| t - healed)
            .unwrap_or_default();
        assert!(single <= SEC, "two masters for {single:?} after healing");
        assert!(
            s.r[0].garp_bursts > garp_before,
            "offset {offset_ms} ms: no gratuitous ARP after healing"
        );
    }
}

#[test]
fn garp_master_refresh_repeats_while_master_only() {
    // keepalived's garp_master_refresh 10: a refresh 10 s after becoming master, then every
    // 10 s, none as backup.
    let mut p0 = params(150, 11);
    p0.settings.garp_refresh = 10 * SEC;
    let mut p1 = params(100, 12);
    p1.settings.garp_refresh = 10 * SEC;
    let mut s = Sim::new(vec![p0, p1]);
    s.start(0);
    s.start(1);
    s.run_for(5 * SEC);
    assert_eq!(s.masters(), vec![0]);
    let became = s.r[0]
        .transitions
        .iter()
        .find(|(_, st, _)| *st == State::Master)
        .map(|(t, _, _)| *t)
        .expect("router 0 became master");
    s.run_for(40 * SEC);
    let want: Vec<Instant> = (1..=4).map(|k| became + 10 * k * SEC).collect();
    let got: Vec<Instant> = s.r[0]
        .garp_refreshes
        .iter()
        .copied()
        .filter(|t| *t <= became + 40 * SEC)
        .collect();
    assert_eq!(got, want);
    assert!(
        s.r[1].garp_refreshes.is_empty(),
        "a backup sends no refresh"
    );
    // Shut down: no refresh afterwards; the other one starts its own period.
    s.stop(0);
    let n = s.r[0].garp_refreshes.len();
    s.run_for(30 * SEC);
    assert_eq!(s.r[0].garp_refreshes.len(), n);
    assert!(!s.r[1].garp_refreshes.is_empty());
}

#[test]
fn no_garp_master_refresh_by_default() {
    let mut s = Sim::new(vec![params(150, 11)]);
    s.start(0);
    s.run_for(120 * SEC);
    assert_eq!(s.masters(), vec![0]);
    assert!(s.r[0].garp_refreshes.is_empty());
}
