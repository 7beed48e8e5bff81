//! The VRRP state machine of one virtual router, without I/O and without a clock.
//!
//! Every entry point takes `now`; what the router must do comes out as [`Action`]s pulled with
//! [`Machine::poll_action`], and when it next needs to be woken is [`Machine::poll_timeout`].
//! The Linux driver ([`crate::run`]) and the simulated network of the tests are both thin
//! loops around it.
//!
//! States and events follow RFC 3768 §6 (Initialize, Backup, Master) plus keepalived's FAULT:
//! the interface is down, or a track script with weight 0 fails.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use subtle::ConstantTimeEq;

use crate::auth_hmac::{self, AuthHmac, Rejection, TRAILER_LEN};
use crate::packet::{Auth, IpPair, Packet, Repr, V3Checksum, Version, WireError, AUTH_LEN};

/// Everything the machine needs to know about its instance. `vrid` and `version` are the
/// virtual router itself and are fixed for the machine's lifetime (another one is another
/// router: see [`crate::VrrpConfig::restart_reason`]); `settings` can change while it runs
/// ([`Machine::reconfigure`]).
#[derive(Debug, Clone)]
pub struct Params {
    /// Virtual router identifier.
    pub vrid: u8,
    /// VRRPv2 or VRRPv3.
    pub version: Version,
    /// Primary address of the interface: the source of our adverts and the tie-breaker
    /// (followed with [`Machine::set_primary`]).
    pub primary: IpAddr,
    /// keepalived's `state MASTER`: claim at once instead of waiting Master_Down_Interval.
    pub start_as_master: bool,
    /// What a live reload may change.
    pub settings: Settings,
}

/// The parameters of a running router that [`Machine::reconfigure`] applies in place.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Configured priority, 1..=255 (255: the owner of the addresses).
    pub priority: u8,
    /// Advertisement_Interval.
    pub advert_interval: Duration,
    /// Preempt_Mode.
    pub preempt: bool,
    /// keepalived's preempt_delay: how long a lower-priority master is tolerated.
    pub preempt_delay: Duration,
    /// VRRPv2 simple text password; `None`: auth type 0.
    pub auth_pass: Option<Vec<u8>>,
    /// The virtual addresses, all of one family (the adverts' IP family).
    pub vips: Vec<IpAddr>,
    /// Delay before the second burst of gratuitous ARP.
    pub garp_delay: Duration,
    /// keepalived's `garp_master_refresh`: while master, a refresh burst this often; zero: none.
    pub garp_refresh: Duration,
    /// Unicast mode: adverts are accepted from these sources only (as keepalived does).
    pub unicast_peers: Vec<IpAddr>,
    /// VRRPv3 over IPv4: what the checksum covers (keepalived's default, or RFC 9568's).
    pub v3_checksum: V3Checksum,
}

/// Protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not started, or shut down (RFC 3768 §6.4.1).
    Initialize,
    /// Watching the master (RFC 3768 §6.4.2).
    Backup,
    /// Owning the addresses (RFC 3768 §6.4.3).
    Master,
    /// Interface down or a weight-0 track script failing: no adverts, no addresses.
    Fault,
}

impl State {
    /// Every state, in the order [`State::index`] numbers them.
    pub const ALL: [State; 4] = [
        State::Initialize,
        State::Backup,
        State::Master,
        State::Fault,
    ];

    /// This state's position in [`State::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name keepalived passes to notify scripts.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened; logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Start-up (RFC 3768 §6.4.1).
    Startup,
    /// We own the addresses (priority 255).
    Owner,
    /// Configured to start as master.
    ConfiguredMaster,
    /// Master_Down_Timer fired: no advert from a master for Master_Down_Interval.
    MasterDown,
    /// The master sent priority 0 and Skew_Time passed.
    MasterStopped,
    /// A lower-priority master was preempted (after preempt_delay).
    Preempt {
        /// The master preempted.
        from: IpAddr,
        /// The priority it advertised.
        priority: u8,
    },
    /// An advert with a higher priority (or equal and a higher address) arrived.
    HigherPriority {
        /// The advert's sender.
        from: IpAddr,
        /// The priority it advertised.
        priority: u8,
    },
    /// The interface went down.
    LinkDown,
    /// A track script with weight 0 (or track_backends with weight 0) is failing.
    TrackFault,
    /// The fault cleared.
    FaultCleared,
    /// Asked to stop.
    Shutdown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Startup => f.write_str("startup"),
            Reason::Owner => f.write_str("address owner (priority 255)"),
            Reason::ConfiguredMaster => f.write_str("configured state MASTER"),
            Reason::MasterDown => f.write_str("no advert within Master_Down_Interval"),
            Reason::MasterStopped => f.write_str("master sent priority 0"),
            Reason::Preempt { from, priority } => {
                write!(f, "preempting lower-priority master {from} ({priority})")
            }
            Reason::HigherPriority { from, priority } => {
                write!(f, "higher priority advert from {from} ({priority})")
            }
            Reason::LinkDown => f.write_str("interface down"),
            Reason::TrackFault => f.write_str("track script failing"),
            Reason::FaultCleared => f.write_str("fault cleared"),
            Reason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (build it with [`Machine::advert`]).
    SendAdvert {
        /// 0 when leaving master.
        priority: u8,
    },
    /// Add the virtual addresses to the interface.
    AddVips,
    /// Remove them.
    RemoveVips,
    /// Send one burst of gratuitous ARP for every address.
    SendGarp,
    /// Send the periodic refresh (`garp_master_refresh`) for every address.
    RefreshGarp,
    /// A reconfiguration changed the address list while master: add `added` to the interface
    /// and send gratuitous ARP for them; remove `removed`.
    VipsChanged {
        /// Addresses now ours.
        added: Vec<IpAddr>,
        /// Addresses ours no more.
        removed: Vec<IpAddr>,
    },
    /// The state changed (log it, run notify).
    StateChanged {
        from: State,
        to: State,
        reason: Reason,
        /// Effective priority at the time.
        priority: u8,
    },
}

/// Why a received packet was dropped, in the order keepalived checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Sent by ourselves (looped back).
    Own,
    /// IP TTL is not 255 (RFC 3768 §7.1): it crossed a router.
    Ttl,
    /// Version differs from ours.
    Version,
    /// Type is not ADVERTISEMENT.
    Type,
    /// Length does not match the address count.
    Length,
    /// Checksum does not verify.
    Checksum,
    /// Another virtual router.
    Vrid,
    /// Auth type differs from ours.
    AuthType,
    /// Password differs from ours.
    AuthPass,
    /// Unicast mode: the source is not one of `unicast_peers`.
    NotPeer,
    /// Advert interval differs from ours (VRRPv2, RFC 3768 §7.1).
    Interval,
    /// auth_hmac enforce: no trailer.
    HmacMissing,
    /// auth_hmac: a trailer of another scheme or with reserved bits set.
    HmacMalformed,
    /// auth_hmac: signed with a key id we do not have.
    HmacUnknownKey,
    /// auth_hmac: the MAC does not verify (forged or altered).
    HmacBad,
    /// auth_hmac time mode: the timestamp is outside the window.
    HmacStale,
    /// auth_hmac: the sequence does not grow (replayed).
    HmacReplay,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 17] = [
        Reject::Own,
        Reject::Ttl,
        Reject::Version,
        Reject::Type,
        Reject::Length,
        Reject::Checksum,
        Reject::Vrid,
        Reject::AuthType,
        Reject::AuthPass,
        Reject::NotPeer,
        Reject::Interval,
        Reject::HmacMissing,
        Reject::HmacMalformed,
        Reject::HmacUnknownKey,
        Reject::HmacBad,
        Reject::HmacStale,
        Reject::HmacReplay,
    ];

    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Own => "own",
            Reject::Ttl => "ttl",
            Reject::Version => "version",
            Reject::Type => "type",
            Reject::Length => "length",
            Reject::Checksum => "checksum",
            Reject::Vrid => "vrid",
            Reject::AuthType => "auth_type",
            Reject::AuthPass => "auth_pass",
            Reject::NotPeer => "not_peer",
            Reject::Interval => "interval",
            Reject::HmacMissing => Rejection::Missing.as_str(),
            Reject::HmacMalformed => Rejection::Malformed.as_str(),
            Reject::HmacUnknownKey => Rejection::UnknownKey.as_str(),
            Reject::HmacBad => Rejection::Bad.as_str(),
            Reject::HmacStale => Rejection::Stale.as_str(),
            Reject::HmacReplay => Rejection::Replay.as_str(),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Rejection> for Reject {
    fn from(r: Rejection) -> Reject {
        match r {
            Rejection::Missing => Reject::HmacMissing,
            Rejection::Malformed => Reject::HmacMalformed,
            Rejection::UnknownKey => Reject::HmacUnknownKey,
            Rejection::Bad => Reject::HmacBad,
            Rejection::Stale => Reject::HmacStale,
            Rejection::Replay => Reject::HmacReplay,
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Adverts accepted.
    pub rx_ok: u64,
    /// Adverts asked to be sent.
    pub tx: u64,
    /// Dropped packets, indexed like [`Reject::ALL`].
    #[serde(serialize_with = "ser_rejected")]
    pub rejected: [u64; Reject::ALL.len()],
    /// Accepted adverts whose address list differs from ours.
    pub vip_mismatch: u64,
    /// Transitions into each state, indexed like [`State::ALL`].
    #[serde(serialize_with = "ser_transitions")]
    pub transitions: [u64; 4],
    /// auth_hmac receive-only or permissive: adverts accepted without a trailer (a host of
    /// the LAN does not sign yet).
    pub hmac_unsigned: u64,
    /// auth_hmac time mode: accepted adverts whose clock skew with us was past half the
    /// window (NTP drifting: past the whole window they are dropped as stale).
    pub hmac_skew_high: u64,
}

fn ser_transitions<S: serde::Serializer>(v: &[u64; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (st, n) in State::ALL.iter().zip(v) {
        m.serialize_entry(st.as_str(), n)?;
    }
    m.end()
}

fn ser_rejected<S: serde::Serializer>(
    v: &[u64; Reject::ALL.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (r, n) in Reject::ALL.iter().zip(v) {
        m.serialize_entry(r.as_str(), n)?;
    }
    m.end()
}

impl Stats {
    /// Transitions to master.
    pub fn became_master(&self) -> u64 {
        self.transitions[State::Master.index()]
    }

    /// Drops counted for one reason.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()]
    }
}

/// The header fields of a received packet that the checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// IP source.
    pub src: IpAddr,
    /// IP destination.
    pub dst: IpAddr,
    /// IP TTL.
    pub ttl: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Adver_Timer (RFC 3768 §6.2).
    Advert = 0,
    /// Master_Down_Timer (RFC 3768 §6.2).
    MasterDown = 1,
    /// preempt_delay running out while a lower-priority master is up.
    Preempt = 2,
    /// Second burst of gratuitous ARP (garp_master_delay).
    Garp = 3,
    /// Periodic gratuitous ARP while master (garp_master_refresh).
    GarpRefresh = 4,
}

impl Timer {
    const VALUES: [Timer; 5] = [
        Timer::Advert,
        Timer::MasterDown,
        Timer::Preempt,
        Timer::Garp,
        Timer::GarpRefresh,
    ];
}

#[derive(Debug, Default, Clone, Copy)]
struct TimerTable([Option<Instant>; 5]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn stop_all(&mut self) {
        self.0 = [None; 5];
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
    fn expired(&self, now: Instant) -> Option<Timer> {
        Timer::VALUES
            .iter()
            .copied()
            .filter(|t| self.get(*t).is_some_and(|at| at <= now))
            .min_by_key(|t| self.get(*t))
    }
}

/// One virtual router.
#[derive(Debug)]
pub struct Machine {
    p: Params,
    state: State,
    timers: TimerTable,
    actions: std::collections::VecDeque<Action>,
    /// Master_Adver_Interval: ours for v2, the master's for v3.
    master_adver_interval: Duration,
    link_up: bool,
    track_fault: bool,
    track_weight: i32,
    stats: Stats,
    /// Address and priority of the lower-priority master being preempted after a delay.
    preempting: Option<(IpAddr, u8)>,
    /// Why the Master_Down_Timer runs: no advert, or a priority-0 advert (Skew_Time).
    down_reason: Reason,
    auth_data: [u8; AUTH_LEN],
    /// keepalived 2.4's auth_hmac, when configured ([`Machine::set_auth_hmac`]).
    hmac: Option<AuthHmac>,
}

impl Machine {
    /// A router in Initialize; nothing happens until [`Machine::start`].
    pub fn new(p: Params) -> Machine {
        Machine {
            auth_data: auth_data(&p.settings),
            master_adver_interval: p.settings.advert_interval,
            p,
            state: State::Initialize,
            timers: TimerTable::default(),
            actions: Default::default(),
            link_up: true,
            track_fault: false,
            track_weight: 0,
            stats: Stats::default(),
            preempting: None,
            down_reason: Reason::MasterDown,
            hmac: None,
        }
    }

    /// Turns auth_hmac on (or off with `None`), or replaces its state. Once on, received
    /// adverts go through [`Machine::handle_packet_at`] and sent ones get
    /// [`Machine::sign_advert`]'s trailer.
    pub fn set_auth_hmac(&mut self, a: Option<AuthHmac>) {
        self.hmac = a;
    }

    /// The auth_hmac state, if configured.
    pub fn auth_hmac(&self) -> Option<&AuthHmac> {
        self.hmac.as_ref()
    }

    /// The auth_hmac state, to reconfigure it (reload) without losing its sequences.
    pub fn auth_hmac_mut(&mut self) -> Option<&mut AuthHmac> {
        self.hmac.as_mut()
    }

    /// The trailer to append to `msg`, the encoded [`Machine::advert`] (the same trailer for
    /// every unicast copy); `None` without auth_hmac or in receive-only mode. `wall` is the
    /// wall clock: the sequence is a UTC timestamp.
    pub fn sign_advert(&mut self, wall: SystemTime, msg: &[u8]) -> Option<[u8; TRAILER_LEN]> {
        let origin = auth_hmac::Origin {
            version: self.p.version,
            vrid: self.p.vrid,
            src: self.p.primary,
        };
        self.hmac.as_mut()?.sign(wall, &origin, msg)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Effective priority: configured plus track weights, kept in 1..=254; 255 stays 255.
    pub fn priority(&self) -> u8 {
        if self.p.settings.priority == 255 {
            return 255;
        }
        (i32::from(self.p.settings.priority) + self.track_weight).clamp(1, 254) as u8
    }

    /// Skew_Time (RFC 3768 §6.1; RFC 9568 §6.1 scales it by Master_Adver_Interval).
    pub fn skew_time(&self) -> Duration {
        let unit = if self.p.version == Version::V3 {
            self.master_adver_interval
        } else {
            Duration::from_secs(1)
        };
        unit * (256 - u32::from(self.priority())) / 256
    }

    /// Master_Down_Interval = 3 * Advertisement_Interval + Skew_Time (RFC 3768 §6.1).
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval + self.skew_time()
    }

    /// The advert to send for [`Action::SendAdvert`].
    pub fn advert(&self, priority: u8) -> Repr {
        let (auth, adver_int) = if self.p.version == Version::V3 {
            let cs = (self.p.settings.advert_interval.as_millis() / 10).min(0x0fff) as u16;
            (Auth::None, cs)
        } else {
            let auth = match &self.p.settings.auth_pass {
                Some(_) => Auth::SimpleText(self.auth_data),
                None => Auth::None,
            };
            let secs = self.p.settings.advert_interval.as_secs().clamp(1, 255) as u16;
            (auth, secs)
        };
        Repr {
            version: self.p.version,
            vrid: self.p.vrid,
            priority,
            auth,
            adver_int,
            addresses: self.p.settings.vips.clone(),
        }
    }

    /// The next action for the driver to carry out (send, add or remove VIPs, notify), in
    /// order; call until `None` after each event.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn faulty(&self) -> bool {
        !self.link_up || self.track_fault
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.stats.transitions[to.index()] += 1;
        self.actions.push_back(Action::StateChanged {
            from,
            to,
            reason,
            priority: self.priority(),
        });
    }

    fn send_advert(&mut self, priority: u8) {
        self.stats.tx += 1;
        self.actions.push_back(Action::SendAdvert { priority });
    }

    /// The Startup event.
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        if self.faulty() {
            let reason = if self.link_up {
                Reason::TrackFault
            } else {
                Reason::LinkDown
            };
            self.transition(State::Fault, reason);
            return;
        }
        self.enter_from_init(now, Reason::Startup);
    }

    fn enter_from_init(&mut self, now: Instant, reason: Reason) {
        if self.p.settings.priority == 255 {
            // RFC 3768 §6.4.1: the owner sends an ADVERTISEMENT, broadcasts gratuitous ARP
            // and transitions to Master.
            self.become_master(now, Reason::Owner);
        } else if self.p.start_as_master && reason == Reason::Startup {
            // keepalived's `state MASTER`: claim at once; a better master will push us back.
            self.become_master(now, Reason::ConfiguredMaster);
        } else {
            // RFC 3768 §6.4.1: Master_Down_Timer = Master_Down_Interval, transition to Backup.
            self.master_adver_interval = self.p.settings.advert_interval;
            self.arm_master_down(now, self.master_down_interval(), Reason::MasterDown);
            self.transition(State::Backup, reason);
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        // RFC 3768 §6.4.2 (and §6.4.1 for the owner): send an ADVERTISEMENT, broadcast a
        // gratuitous ARP for each address, start the Adver_Timer, transition to Master.
        self.timers.stop_all();
        self.preempting = None;
        self.transition(State::Master, reason);
        self.actions.push_back(Action::AddVips);
        self.send_advert(self.priority());
        self.actions.push_back(Action::SendGarp);
        self.timers
            .set(Timer::Advert, now + self.p.settings.advert_interval);
        if !self.p.settings.garp_delay.is_zero() {
            self.timers
                .set(Timer::Garp, now + self.p.settings.garp_delay);
        }
        self.arm_garp_refresh(now);
    }

    /// keepalived (vrrp_scheduler.c): the first refresh one `garp_master_refresh` after
    /// becoming master, then one every `garp_master_refresh`.
    fn arm_garp_refresh(&mut self, now: Instant) {
        if self.p.settings.garp_refresh.is_zero() {
            self.timers.stop(Timer::GarpRefresh);
        } else {
            self.timers
                .set(Timer::GarpRefresh, now + self.p.settings.garp_refresh);
        }
    }

    fn leave_master(&mut self, send_stop: bool) {
        self.timers.stop(Timer::Advert);
        self.timers.stop(Timer::Garp);
        self.timers.stop(Timer::GarpRefresh);
        if send_stop {
            self.send_advert(0);
        }
        self.actions.push_back(Action::RemoveVips);
    }

    /// Handles every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.expired(now) {
            self.timers.stop(t);
            match (self.state, t) {
                (State::Master, Timer::Advert) => {
                    // RFC 3768 §6.4.3: send an ADVERTISEMENT, reset the Adver_Timer.
                    self.send_advert(self.priority());
                    self.timers
                        .set(Timer::Advert, now + self.p.settings.advert_interval);
                }
                (State::Master, Timer::Garp) => self.actions.push_back(Action::SendGarp),
                (State::Master, Timer::GarpRefresh) => {
                    self.actions.push_back(Action::RefreshGarp);
                    self.arm_garp_refresh(now);
                }
                (State::Backup, Timer::MasterDown) => {
                    // RFC 3768 §6.4.2: Master_Down_Timer fired -> Master.
                    let reason = self.down_reason;
                    self.become_master(now, reason);
                }
                (State::Backup, Timer::Preempt) => {
                    // keepalived: preempt_delay ran out with a lower-priority master still up.
                    let (from, priority) = self
                        .preempting
                        .unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
                    self.become_master(now, Reason::Preempt { from, priority });
                }
                _ => {}
            }
        }
    }

    fn arm_master_down(&mut self, now: Instant, after: Duration, reason: Reason) {
        self.down_reason = reason;
        self.timers.set(Timer::MasterDown, now + after);
    }

    /// A received VRRP message (the IP payload) with its IP header fields. Checks it in
    /// keepalived's order, counts a drop by reason, then runs RFC 3768 §6.4.2 or §6.4.3.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        meta: RxMeta,
        payload: &[u8],
    ) -> Result<(), Reject> {
        self.receive(now, None, meta, payload)
    }

    /// [`Machine::handle_packet`] with the wall clock, which auth_hmac needs (the trailer's
    /// sequence is a UTC timestamp). Without `wall` (plain `handle_packet`), an instance with
    /// auth_hmac in time mode finds every trailer stale: it fails closed.
    pub fn handle_packet_at(
        &mut self,
        now: Instant,
        wall: SystemTime,
        meta: RxMeta,
        payload: &[u8],
    ) -> Result<(), Reject> {
        self.receive(now, Some(wall), meta, payload)
    }

    fn receive(
        &mut self,
        now: Instant,
        wall: Option<SystemTime>,
        meta: RxMeta,
        payload: &[u8],
    ) -> Result<(), Reject> {
        let r = self.check(meta, payload, wall);
        match r {
            Ok(repr) => {
                self.stats.rx_ok += 1;
                self.on_advert(now, meta.src, &repr);
                Ok(())
            }
            Err(reject) => {
                self.stats.rejected[reject.index()] += 1;
                Err(reject)
            }
        }
    }

    fn check(
        &mut self,
        meta: RxMeta,
        payload: &[u8],
        wall: Option<SystemTime>,
    ) -> Result<Repr, Reject> {
        if meta.src == self.p.primary {
            return Err(Reject::Own);
        }
        // RFC 3768 §7.1: MUST verify that the IP TTL is 255.
        if meta.ttl != 255 {
            return Err(Reject::Ttl);
        }
        let packet = Packet::new_checked(payload).map_err(|_| Reject::Length)?;
        // RFC 3768 §7.1: MUST verify the VRRP version.
        if packet.version() != self.p.version {
            return Err(Reject::Version);
        }
        // keepalived 2.4 auth_hmac: a trailer is there when the payload is exactly 28 bytes
        // longer than the message; the checks below judge the message alone.
        let whole = payload;
        let (payload, trailer) = match self.hmac {
            Some(_) => auth_hmac::split_trailer(payload, if meta.src.is_ipv6() { 16 } else { 4 }),
            None => (payload, None),
        };
        let packet = Packet::new_checked(payload).map_err(|_| Reject::Length)?;
        let pair = IpPair {
            src: meta.src,
            dst: meta.dst,
        };
        // RFC 3768 §7.1 (RFC 9568 §7.1): type, length (count vs. message), checksum; over
        // IPv6 a trailer is inside the checksum (as keepalived's kernel computes it).
        let parsed = if trailer.is_some() && auth_hmac::checksum_covers_trailer(meta.src) {
            if !Packet::new_unchecked(whole).verify_checksum(&pair) {
                return Err(Reject::Checksum);
            }
            Repr::parse_checksum_judged(&packet, &pair)
        } else {
            Repr::parse_with(&packet, &pair, self.p.settings.v3_checksum)
        };
        let repr = parsed.map_err(|e| match e {
            WireError::Truncated | WireError::Length { .. } => Reject::Length,
            WireError::Version(_) | WireError::Family => Reject::Version,
            WireError::Type(_) => Reject::Type,
            WireError::Checksum => Reject::Checksum,
        })?;
        // RFC 3768 §7.1: MUST verify that the VRID is configured on the interface.
        if repr.vrid != self.p.vrid {
            return Err(Reject::Vrid);
        }
        if !self.p.settings.unicast_peers.is_empty()
            && !self.p.settings.unicast_peers.contains(&meta.src)
        {
            return Err(Reject::NotPeer);
        }
        if let Some(h) = self.hmac.as_mut() {
            // keepalived 2.4.3 vrrp.c: authenticate before any field reaches the state machine.
            let origin = auth_hmac::Origin {
                version: self.p.version,
                vrid: self.p.vrid,
                src: meta.src,
            };
            let wall = wall.unwrap_or(std::time::UNIX_EPOCH);
            match h.verify(wall, &origin, payload, trailer)? {
                auth_hmac::Accepted::Unsigned => self.stats.hmac_unsigned += 1,
                auth_hmac::Accepted::Signed {
                    skew: Some(skew), ..
                } if h.skew_is_high(skew) => {
                    // Logged 1 in 60.
                    self.stats.hmac_skew_high += 1;
                    if self.stats.hmac_skew_high % 60 == 1 {
                        tracing::warn!(from = %meta.src, skew_secs = skew, count = self.stats.hmac_skew_high, "auth_hmac: clock skew with the sender past half the time window (check NTP)");
                    }
                }
                auth_hmac::Accepted::Signed { .. } => {}
            }
        }
        if self.p.version == Version::V2 {
            // RFC 3768 §7.1: the auth type must match ours, and so must the password
            // (§5.3.6.1). Compared in constant time: timing must not reveal the password.
            let want = if self.p.settings.auth_pass.is_some() {
                1
            } else {
                0
            };
            if repr.auth.code() != want {
                return Err(Reject::AuthType);
            }
            if let Auth::SimpleText(data) = repr.auth {
                if !bool::from(data.ct_eq(&self.auth_data)) {
                    return Err(Reject::AuthPass);
                }
            }
            // RFC 3768 §7.1: MUST verify that the Adver Interval matches ours.
            if u64::from(repr.adver_int) != self.p.settings.advert_interval.as_secs() {
                return Err(Reject::Interval);
            }
        }
        // RFC 3768 §7.1: a differing address list MAY be logged; it is not dropped.
        let same = repr.addresses.len() == self.p.settings.vips.len()
            && self
                .p
                .settings
                .vips
                .iter()
                .all(|v| repr.addresses.contains(v));
        if !same {
            self.stats.vip_mismatch += 1;
            if self.stats.vip_mismatch == 1 || self.stats.vip_mismatch.is_multiple_of(100) {
                tracing::warn!(
                    from = %meta.src,
                    theirs = ?repr.addresses,
                    ours = ?self.p.settings.vips,
                    count = self.stats.vip_mismatch,
                    "advert lists other virtual addresses than ours"
                );
            }
        }
        Ok(repr)
    }

    fn on_advert(&mut self, now: Instant, from: IpAddr, repr: &Repr) {
        let mine = self.priority();
        match self.state {
            State::Backup => {
                if self.p.version == Version::V3 {
                    // RFC 9568 §6.4.2: Master_Adver_Interval = the advert's interval.
                    self.master_adver_interval =
                        Duration::from_millis(u64::from(repr.adver_int.max(1)) * 10);
                }
                if repr.priority == 0 {
                    // RFC 3768 §6.4.2: priority 0 -> Master_Down_Timer = Skew_Time.
                    self.arm_master_down(now, self.skew_time(), Reason::MasterStopped);
                    self.timers.stop(Timer::Preempt);
                    self.preempting = None;
                } else if !self.p.settings.preempt || repr.priority >= mine {
                    // RFC 3768 §6.4.2: Preempt_Mode False or priority >= ours -> reset
                    // Master_Down_Timer to Master_Down_Interval.
                    self.arm_master_down(now, self.master_down_interval(), Reason::MasterDown);
                    self.timers.stop(Timer::Preempt);
                    self.preempting = None;
                } else if !self.p.settings.preempt_delay.is_zero() {
                    // keepalived's preempt_delay: keep following the lower-priority master
                    // until the delay has run out, then take over.
                    self.arm_master_down(now, self.master_down_interval(), Reason::MasterDown);
                    if self.timers.get(Timer::Preempt).is_none() {
                        self.timers
                            .set(Timer::Preempt, now + self.p.settings.preempt_delay);
                    }
                    self.preempting = Some((from, repr.priority));
                } else {
                    // RFC 3768 §6.4.2: otherwise discard; Master_Down_Timer runs out and we
                    // preempt the lower-priority master.
                    self.down_reason = Reason::Preempt {
                        from,
                        priority: repr.priority,
                    };
                }
            }
            State::Master => {
                if repr.priority == 0 {
                    // RFC 3768 §6.4.3: priority 0 -> send an ADVERTISEMENT at once, reset
                    // the Adver_Timer.
                    self.send_advert(mine);
                    self.timers
                        .set(Timer::Advert, now + self.p.settings.advert_interval);
                } else if repr.priority > mine
                    // IpAddr orders each family numerically; both are of one family here.
                    || (repr.priority == mine && from > self.p.primary)
                {
                    // RFC 3768 §6.4.3: greater priority, or equal and a greater primary
                    // address -> cancel Adver_Timer, Master_Down_Timer = Master_Down_Interval,
                    // transition to Backup.
                    //
                    // Beyond the RFC: one last advert with our own (lower) priority on the
                    // way out. After a partition heals, hosts that resolved the VIP to us
                    // must learn the winner's MAC; the winner re-asserts with gratuitous ARP
                    // when it hears a lower master (below, as keepalived does), but would
                    // never hear us if its advert reached us first.
                    self.send_advert(mine);
                    self.leave_master(false);
                    self.transition(
                        State::Backup,
                        Reason::HigherPriority {
                            from,
                            priority: repr.priority,
                        },
                    );
                    self.arm_master_down(now, self.master_down_interval(), Reason::MasterDown);
                } else {
                    // RFC 3768 §6.4.3 says discard. keepalived also answers at once with an
                    // advert and gratuitous ARP: another master is up (split brain after a
                    // partition), and the sooner it hears us the sooner it yields.
                    tracing::info!(
                        from = %from,
                        priority = repr.priority,
                        "lower-priority advert while master: re-asserting"
                    );
                    self.send_advert(mine);
                    self.actions.push_back(Action::SendGarp);
                    self.timers
                        .set(Timer::Advert, now + self.p.settings.advert_interval);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// The interface's primary address changed: the source of our adverts and the
    /// tie-breaker of RFC 3768 §6.4.3.
    pub fn set_primary(&mut self, primary: IpAddr) {
        self.p.primary = primary;
    }

    /// Interface carrier and admin state.
    pub fn set_link(&mut self, now: Instant, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        self.refresh_fault(
            now,
            if up {
                Reason::FaultCleared
            } else {
                Reason::LinkDown
            },
        );
    }

    /// Track scripts and track_backends: the sum of the weights that apply now, and whether a
    /// weight-0 one is failing.
    pub fn set_tracking(&mut self, now: Instant, weight: i32, fault: bool) {
        self.track_weight = weight;
        if self.track_fault != fault {
            self.track_fault = fault;
            let reason = if fault {
                Reason::TrackFault
            } else {
                Reason::FaultCleared
            };
            self.refresh_fault(now, reason);
        }
    }

    fn refresh_fault(&mut self, now: Instant, reason: Reason) {
        match (self.state, self.faulty()) {
            (State::Master, true) => {
                // keepalived: leaving master for FAULT sends priority 0 so that a backup
                // takes over after Skew_Time (useless when the link is down; it is dropped).
                self.leave_master(self.link_up);
                self.timers.stop_all();
                self.transition(State::Fault, reason);
            }
            (State::Backup, true) => {
                self.timers.stop_all();
                self.preempting = None;
                self.transition(State::Fault, reason);
            }
            (State::Fault, false) => {
                // Back as after Startup (RFC 3768 §6.4.1).
                self.enter_from_init(now, reason);
            }
            _ => {}
        }
    }

    /// A new configuration for the running router (live reload), applied as keepalived does
    /// on reload, without leaving the current state:
    /// - priority: carried by the next advert. A master that now has a lower priority than a
    ///   preempting backup is taken over by it (RFC 3768 §6.4.2: the backup discards the lower
    ///   advert and its Master_Down_Timer runs out); a backup that now has a higher priority
    ///   than the master preempts it at its next advert (after `preempt_delay`).
    /// - addresses: while master, [`Action::VipsChanged`] adds the new ones (with gratuitous
    ///   ARP) and removes the old ones at once; the next advert lists them.
    /// - advert interval: the running Adver_Timer keeps its deadline, the next one uses the
    ///   new interval (VRRPv2 backups drop adverts of another interval: reload them together).
    /// - preempt, preempt_delay, password, gratuitous ARP delay, unicast peers: from now on;
    ///   turning preempt off cancels a pending preemption.
    ///
    /// The virtual router id and the version are not settings: a router with other ones is
    /// another router, started anew. A priority moving to or from 255 is taken as any other
    /// priority here; the driver restarts such an instance instead, because the owner's
    /// addresses are its own from start ([`crate::VrrpConfig::restart_reason`]).
    pub fn reconfigure(&mut self, now: Instant, new: Settings) {
        let old = std::mem::replace(&mut self.p.settings, new);
        self.auth_data = auth_data(&self.p.settings);
        if self.p.version == Version::V2 || self.state == State::Master {
            // VRRPv2: Master_Adver_Interval is our own Advertisement_Interval. VRRPv3: a
            // backup keeps the one learnt from the master's adverts.
            self.master_adver_interval = self.p.settings.advert_interval;
        }
        match self.state {
            State::Master => {
                let added: Vec<IpAddr> = self
                    .p
                    .settings
                    .vips
                    .iter()
                    .filter(|a| !old.vips.contains(a))
                    .copied()
                    .collect();
                let removed: Vec<IpAddr> = old
                    .vips
                    .iter()
                    .filter(|a| !self.p.settings.vips.contains(a))
                    .copied()
                    .collect();
                if !added.is_empty() || !removed.is_empty() {
                    self.actions
                        .push_back(Action::VipsChanged { added, removed });
                }
                if self.p.settings.garp_delay.is_zero() {
                    self.timers.stop(Timer::Garp);
                }
                if self.p.settings.garp_refresh != old.garp_refresh {
                    self.arm_garp_refresh(now);
                }
            }
            State::Backup => {
                let mine = self.priority();
                let still_lower = |p: u8| self.p.settings.preempt && p < mine;
                if let Some((_, theirs)) = self.preempting {
                    if !still_lower(theirs) {
                        // The master is no longer one to preempt (preempt off, or our
                        // priority fell): follow it again.
                        self.timers.stop(Timer::Preempt);
                        self.preempting = None;
                    } else if self.p.settings.preempt_delay.is_zero() {
                        // No delay any more: the next lower advert is discarded and
                        // Master_Down_Timer runs out (RFC 3768 §6.4.2).
                        self.timers.stop(Timer::Preempt);
                        self.preempting = None;
                    }
                }
                if let Reason::Preempt { priority, .. } = self.down_reason {
                    if !still_lower(priority) {
                        // Lower adverts were being discarded to let Master_Down_Timer run
                        // out; now they would not be: the master stays until it is silent.
                        self.arm_master_down(now, self.master_down_interval(), Reason::MasterDown);
                    }
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// The Shutdown event (RFC 3768 §6.4.2, §6.4.3).
    pub fn shutdown(&mut self, _now: Instant) {
        match self.state {
            State::Master => {
                // RFC 3768 §6.4.3: cancel the Adver_Timer, send an ADVERTISEMENT with
                // priority 0, transition to Initialize.
                self.leave_master(true);
            }
            State::Backup | State::Fault => {}
            State::Initialize => return,
        }
        self.timers.stop_all();
        self.transition(State::Initialize, Reason::Shutdown);
    }
}

/// The auth data field of our VRRPv2 adverts: the password, zero-padded to 8 bytes.
fn auth_data(s: &Settings) -> [u8; AUTH_LEN] {
    let mut out = [0u8; AUTH_LEN];
    if let Some(pass) = &s.auth_pass {
        let n = pass.len().min(AUTH_LEN);
        out[..n].copy_from_slice(&pass[..n]);
    }
    out
}

#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod tests;
