//! Issue #8: the holes a hostile insider would use, each tried as the attacker would, from one of
//! four footholds: a user with `developer` on one model, a local user with no role, someone who
//! can write the state directory but holds no KEK, and a hostile peer on (or in place of) the
//! socket. Every attack returns one row; `insider_attacks_table` runs them all and prints the
//! table (`ATTACK|foothold|attack|outcome|state` lines, gathered by `scripts/insider.sh`).
//! An attack that succeeds fails the test: the rows only ever say how it was stopped.

mod cli;
mod mount;
mod ops;
mod store;

/// How an attack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused before anything changed.
    Refused,
    /// Not prevented at the source, but detected and named (verify, audit verify, status).
    Detected,
    /// The attack's premise does not hold (e.g. the probed figure is not shown).
    NotExploitable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Detected => "detected and named",
            Outcome::NotExploitable => "not exploitable",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub foothold: &'static str,
    pub attack: String,
    pub outcome: Outcome,
    /// `Some(true)` when the test checked that no state changed; `None` where that does not
    /// apply (a detection after the fact).
    pub state_unchanged: Option<bool>,
}

impl Row {
    pub fn new(foothold: &'static str, attack: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            foothold,
            attack: attack.into(),
            outcome,
            state_unchanged: None,
        }
    }

    pub fn unchanged(mut self) -> Self {
        self.state_unchanged = Some(true);
        self
    }
}

pub const DEVELOPER: &str = "developer on one model";
pub const NO_ROLE: &str = "local user, no role";
pub const STATE_WRITER: &str = "writes the state dir, no KEK";
pub const SOCKET_PEER: &str = "hostile socket peer";

type Attack = fn() -> Vec<Row>;

/// Every attack, in table order.
const ATTACKS: &[(&str, Attack)] = &[
    (
        "cli::setuid_push_then_root_get",
        cli::setuid_push_then_root_get,
    ),
    (
        "cli::rogue_listener_on_the_socket",
        cli::rogue_listener_on_the_socket,
    ),
    (
        "cli::symlink_swap_during_push",
        cli::symlink_swap_during_push,
    ),
    ("cli::escaped_strings", cli::escaped_strings),
];

#[test]
fn insider_attacks_table() {
    let only = std::env::var("ARCA_INSIDER_ONLY").ok();
    let mut rows = Vec::new();
    for (name, attack) in ATTACKS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprintln!("insider: {name}");
        rows.extend(attack());
    }
    println!(
        "{:<30} {:<62} {:<20} state",
        "foothold", "attack", "outcome"
    );
    for r in &rows {
        let state = match r.state_unchanged {
            Some(true) => "unchanged",
            Some(false) => "CHANGED",
            None => "-",
        };
        println!(
            "ATTACK|{}|{}|{}|{}",
            r.foothold,
            r.attack,
            r.outcome.as_str(),
            state
        );
        println!(
            "{:<30} {:<62} {:<20} {}",
            r.foothold,
            r.attack,
            r.outcome.as_str(),
            state
        );
    }
    assert!(rows.iter().all(|r| r.state_unchanged != Some(false)));
    if only.is_none() {
        assert!(!rows.is_empty(), "no attack ran");
    }
}
