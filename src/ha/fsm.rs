//! The HA state machine, VRRP-like, as pure code: events in (with the time, in
//! ms on a monotonic clock), actions out. No sockets, no timers.
//!
//! - INIT -> BACKUP at start (a stale VIP left by a crashed run is removed).
//! - BACKUP -> MASTER when the master-down timer expires: 3 * advert_interval +
//!   skew, skew = (256 - priority) * advert_interval / 256 (the better node's timer
//!   runs out first). An advert that counts resets it: any master's advert without
//!   preemption, only a better node's with preemption (a lower master is then taken
//!   over, after preempt_delay). A priority-0 advert (a master leaving) sets the
//!   timer to just the skew.
//! - MASTER -> BACKUP on an advert from a better (priority, node_id). An advert
//!   from a worse master (a healed split brain) makes this node re-announce.
//! - FAULT on a failed track, link loss or a VIP that cannot be added; FAULT never
//!   holds the VIP. A MASTER entering FAULT or shutting down sends a priority-0
//!   advert so the peer takes over after only its skew.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FsmConfig {
    pub node_id: String,
    pub priority: u8,
    pub interval_ms: u64,
    pub preempt: bool,
    pub preempt_delay_ms: u64,
}

/// What the runtime learned from a verified advert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub node_id: String,
    pub priority: u8,
    /// The interval it advertises at (0: unknown): a BACKUP waits for three
    /// of the longer of its and ours, as RFC 5798 waits on the master's
    pub interval_ms: u64,
    /// Whether it wins a tie of priority and node_id (a config copied to the
    /// peer without a new node_id): its address is the greater, as VRRP
    /// breaks ties by the primary address.
    pub wins_tie: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    /// Start as MASTER: this node was MASTER in the process it replaces (binary
    /// upgrade), and the VIPs never left.
    ResumeMaster,
    Tick,
    Advert(Heard),
    /// A track failed, the link is down, or the VIP could not be added (true); all
    /// clear again (false).
    Fault(bool),
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AddVip,
    RemoveVip,
    SendAdvert {
        priority: u8,
    },
    /// Gratuitous ARP / unsolicited NA, so the network sends the VIP's traffic here.
    Announce,
    Transition {
        from: State,
        to: State,
    },
}

#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    master_down_at: u64,
    next_advert_at: u64,
    /// With preemption: since when a worse master has been heard.
    worse_master_since: Option<u64>,
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: State::Init,
            master_down_at: 0,
            next_advert_at: 0,
            worse_master_since: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// New settings (a reload); the state and its timers stay. A MASTER stays
    /// MASTER: a new priority is in its next advert, and a better peer preempts
    /// as its own settings say.
    pub fn reconfigure(&mut self, cfg: FsmConfig) {
        self.cfg = cfg;
    }

    pub fn skew_ms(&self) -> u64 {
        (256 - u64::from(self.cfg.priority)) * self.cfg.interval_ms / 256
    }

    pub fn master_down_ms(&self) -> u64 {
        3 * self.cfg.interval_ms + self.skew_ms()
    }

    /// The master-down time after hearing a master that advertises every
    /// `theirs` ms: three of its intervals when they are longer than ours
    /// (else a BACKUP whose peer moved to a longer interval first, in a
    /// rolling reload, took over between two of its adverts, over and over).
    fn master_down_after(&self, theirs: u64) -> u64 {
        // (a minute at most: an authenticated but misconfigured peer)
        3 * self.cfg.interval_ms.max(theirs.min(60_000)) + self.skew_ms()
    }

    fn beats_us(&self, h: &Heard) -> bool {
        let theirs = (h.priority, h.node_id.as_str());
        let ours = (self.cfg.priority, self.cfg.node_id.as_str());
        theirs > ours || (theirs == ours && h.wins_tie)
    }

    /// When the runtime must deliver the next `Tick`.
    pub fn next_wakeup(&self) -> Option<u64> {
        match self.state {
            State::Backup => Some(self.master_down_at),
            State::Master => Some(self.next_advert_at),
            _ => None,
        }
    }

    fn go(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        if from != to {
            self.state = to;
            out.push(Action::Transition { from, to });
        }
    }

    fn become_master(&mut self, now: u64, out: &mut Vec<Action>) {
        out.push(Action::AddVip);
        out.push(Action::SendAdvert {
            priority: self.cfg.priority,
        });
        out.push(Action::Announce);
        self.next_advert_at = now + self.cfg.interval_ms;
        self.worse_master_since = None;
        self.go(State::Master, out);
    }

    fn become_backup(&mut self, now: u64, out: &mut Vec<Action>) {
        out.push(Action::RemoveVip);
        self.master_down_at = now + self.master_down_ms();
        self.worse_master_since = None;
        self.go(State::Backup, out);
    }

    pub fn handle(&mut self, now: u64, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, ev) {
            (State::Init, Event::Start) => self.become_backup(now, &mut out),
            (State::Init, Event::ResumeMaster) => self.become_master(now, &mut out),
            (State::Backup, Event::Tick) if now >= self.master_down_at => {
                match self.worse_master_since {
                    // preemption: wait out preempt_delay first
                    Some(t) if now < t + self.cfg.preempt_delay_ms => {
                        self.master_down_at = t + self.cfg.preempt_delay_ms;
                    }
                    _ => self.become_master(now, &mut out),
                }
            }
            (State::Master, Event::Tick) if now >= self.next_advert_at => {
                out.push(Action::SendAdvert {
                    priority: self.cfg.priority,
                });
                self.next_advert_at = now + self.cfg.interval_ms;
            }
            (State::Backup, Event::Advert(h)) => {
                if h.priority == 0 {
                    // the master is leaving: take over after only the skew
                    self.master_down_at = self.master_down_at.min(now + self.skew_ms());
                } else if !self.cfg.preempt || self.beats_us(&h) {
                    self.master_down_at = now + self.master_down_after(h.interval_ms);
                    self.worse_master_since = None;
                } else if self.worse_master_since.is_none() {
                    self.worse_master_since = Some(now);
                }
            }
            (State::Master, Event::Advert(h)) => {
                if h.priority == 0 {
                    // another master leaving (a split brain ending): nothing to do
                } else if self.beats_us(&h) {
                    // one last advert first: the better master hears a worse
                    // one (a split brain healing) and announces the VIP again,
                    // so neighbours that learnt this node's MAC move back
                    out.push(Action::SendAdvert {
                        priority: self.cfg.priority,
                    });
                    self.become_backup(now, &mut out);
                } else {
                    // a worse master: a split brain healed. Tell it (and re-announce
                    // the VIP, whose ARP entries it may have taken).
                    out.push(Action::SendAdvert {
                        priority: self.cfg.priority,
                    });
                    out.push(Action::Announce);
                    self.next_advert_at = now + self.cfg.interval_ms;
                }
            }
            (State::Fault, Event::Fault(false)) => self.become_backup(now, &mut out),
            (s, Event::Fault(true)) if s != State::Fault => {
                if s == State::Master {
                    out.push(Action::SendAdvert { priority: 0 });
                }
                out.push(Action::RemoveVip);
                self.go(State::Fault, &mut out);
            }
            (s, Event::Shutdown) if s != State::Init => {
                if s == State::Master {
                    out.push(Action::SendAdvert { priority: 0 });
                }
                out.push(Action::RemoveVip);
                self.go(State::Init, &mut out);
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: u64 = 1000;

    fn fsm(id: &str, prio: u8, preempt: bool, delay: u64) -> Fsm {
        let mut f = Fsm::new(FsmConfig {
            node_id: id.into(),
            priority: prio,
            interval_ms: I,
            preempt,
            preempt_delay_ms: delay,
        });
        let a = f.handle(0, Event::Start);
        assert_eq!(
            a,
            vec![
                Action::RemoveVip,
                Action::Transition {
                    from: State::Init,
                    to: State::Backup
                }
            ]
        );
        f
    }

    fn heard(id: &str, prio: u8) -> Event {
        Event::Advert(Heard {
            node_id: id.into(),
            priority: prio,
            interval_ms: 0,
            wins_tie: false,
        })
    }

    /// Two nodes with one node_id and one priority (a copied config): the
    /// greater address wins, on both sides, rather than both staying MASTER
    /// (an advert naming our own node_id used to be ignored).
    #[test]
    fn a_tie_of_node_id_and_priority_goes_to_the_greater_address() {
        let same = |wins_tie| {
            Event::Advert(Heard {
                node_id: "a".into(),
                priority: 100,
                interval_ms: 0,
                wins_tie,
            })
        };
        for (wins_tie, master_after) in [(true, false), (false, true)] {
            let mut f = fsm("a", 100, true, 0);
            f.handle(10_000, Event::Tick);
            assert_eq!(f.state(), State::Master);
            let actions = f.handle(10_100, same(wins_tie));
            assert_eq!(f.state() == State::Master, master_after, "{actions:?}");
        }
    }

    /// A MASTER that yields to a better one sends one advert at its own
    /// priority first, so the winner announces the VIP again.
    #[test]
    fn a_master_that_yields_says_so_first() {
        let mut f = fsm("a", 100, true, 0);
        f.handle(10_000, Event::Tick);
        assert_eq!(f.state(), State::Master);
        let actions = f.handle(10_100, heard("b", 200));
        assert_eq!(
            actions.first(),
            Some(&Action::SendAdvert { priority: 100 }),
            "{actions:?}"
        );
        assert_eq!(f.state(), State::Backup);
    }

    /// A master that advertises every 500 ms, heard by a BACKUP at 100 ms:
    /// it waits three of the master's intervals, not its own.
    #[test]
    fn a_backup_waits_on_a_slower_masters_interval() {
        let mut f = fsm("b", 100, false, 0);
        f.handle(0, Event::Start);
        f.handle(
            1000,
            Event::Advert(Heard {
                node_id: "a".into(),
                priority: 200,
                interval_ms: 500,
                wins_tie: false,
            }),
        );
        // 300 ms + skew of ours would have been the takeover
        assert!(f.handle(1000 + 400, Event::Tick).is_empty());
        assert_eq!(f.state(), State::Backup);
        assert!(f.next_wakeup() >= Some(1000 + 1500));
    }

    #[test]
    fn takeover_exactly_after_three_intervals_plus_skew() {
        let mut f = fsm("b", 100, false, 0);
        // skew = (256-100)*1000/256 = 609
        assert_eq!(f.skew_ms(), 609);
        assert_eq!(f.master_down_ms(), 3609);
        assert!(f.handle(3608, Event::Tick).is_empty());
        assert_eq!(f.state(), State::Backup);
        let a = f.handle(3609, Event::Tick);
        assert!(a.contains(&Action::AddVip) && a.contains(&Action::Announce));
        assert_eq!(f.state(), State::Master);
        // and then adverts every interval
        assert!(f.handle(4608, Event::Tick).is_empty());
        assert_eq!(
            f.handle(4609, Event::Tick),
            vec![Action::SendAdvert { priority: 100 }]
        );
    }

    #[test]
    fn adverts_keep_a_backup_down() {
        let mut f = fsm("b", 100, false, 0);
        for t in (1000..20_000).step_by(1000) {
            f.handle(t, heard("a", 150));
            assert!(f.handle(t + 999, Event::Tick).is_empty());
        }
        assert_eq!(f.state(), State::Backup);
    }

    #[test]
    fn priority_zero_advert_means_fast_takeover() {
        let mut f = fsm("b", 100, false, 0);
        f.handle(5000, heard("a", 150));
        f.handle(5500, heard("a", 0));
        assert!(f.handle(5500 + 608, Event::Tick).is_empty());
        assert!(f.handle(5500 + 609, Event::Tick).contains(&Action::AddVip));
        assert!(f.skew_ms() < I, "faster than one interval");
    }

    #[test]
    fn higher_priority_wins_and_ties_break_by_node_id() {
        let mut m = fsm("b", 100, false, 0);
        m.handle(4000, Event::Tick);
        assert_eq!(m.state(), State::Master);
        // a worse master: stay, re-announce
        let a = m.handle(4100, heard("a", 100));
        assert!(a.contains(&Action::Announce), "{a:?}");
        assert_eq!(m.state(), State::Master);
        // same priority, bigger node id: it wins
        let a = m.handle(4200, heard("c", 100));
        assert!(a.contains(&Action::RemoveVip));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preemption_off_keeps_the_current_master() {
        let mut hi = fsm("a", 200, false, 0);
        for t in (0..20_000).step_by(1000) {
            hi.handle(t, heard("b", 100));
            hi.handle(t + 500, Event::Tick);
        }
        assert_eq!(hi.state(), State::Backup);
    }

    #[test]
    fn preemption_on_takes_over_after_the_delay() {
        let mut hi = fsm("a", 200, true, 5000);
        // skew (256-200)*1000/256 = 218: master-down 3218
        let mut became = None;
        for t in (0..20_000).step_by(100) {
            if t % 1000 == 0 && hi.state() == State::Backup {
                hi.handle(t, heard("b", 100));
            }
            if hi.handle(t, Event::Tick).contains(&Action::AddVip) {
                became = Some(t);
                break;
            }
        }
        // the worse master was first heard at 0: takeover at max(3218, 0 + 5000)
        assert_eq!(became, Some(5000));
    }

    #[test]
    fn split_brain_then_heal_leaves_one_master() {
        let mut a = fsm("a", 150, false, 0);
        let mut b = fsm("b", 100, false, 0);
        // the link is cut: both time out and become master
        a.handle(4000, Event::Tick);
        b.handle(4000, Event::Tick);
        assert_eq!((a.state(), b.state()), (State::Master, State::Master));
        // healed: each hears the other's advert
        let from_a = a.handle(5000, Event::Tick);
        assert!(from_a.contains(&Action::SendAdvert { priority: 150 }));
        let b_out = b.handle(5001, heard("a", 150));
        assert!(b_out.contains(&Action::RemoveVip));
        let a_out = a.handle(5002, heard("b", 100));
        assert!(a_out.contains(&Action::Announce));
        assert_eq!((a.state(), b.state()), (State::Master, State::Backup));
    }

    #[test]
    fn fault_releases_the_vip_and_tells_the_peer() {
        let mut m = fsm("a", 150, false, 0);
        m.handle(4000, Event::Tick);
        let out = m.handle(4500, Event::Fault(true));
        assert_eq!(
            out,
            vec![
                Action::SendAdvert { priority: 0 },
                Action::RemoveVip,
                Action::Transition {
                    from: State::Master,
                    to: State::Fault
                }
            ]
        );
        assert_eq!(m.next_wakeup(), None);
        assert!(
            m.handle(9000, Event::Tick).is_empty(),
            "FAULT never takes the VIP"
        );
        assert!(m.handle(9000, heard("b", 100)).is_empty());
        let out = m.handle(9500, Event::Fault(false));
        assert!(out.contains(&Action::Transition {
            from: State::Fault,
            to: State::Backup
        }));
        assert_eq!(m.next_wakeup(), Some(9500 + m.master_down_ms()));
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_zero() {
        let mut m = fsm("a", 150, false, 0);
        m.handle(4000, Event::Tick);
        let out = m.handle(4100, Event::Shutdown);
        assert_eq!(out[0], Action::SendAdvert { priority: 0 });
        assert!(out.contains(&Action::RemoveVip));
        let mut b = fsm("b", 100, false, 0);
        assert!(!b
            .handle(100, Event::Shutdown)
            .contains(&Action::SendAdvert { priority: 0 }));
    }
}
