//! Issue #8: the holes a hostile insider would use, each tried as the attacker would, from one of
//! four footholds: a user with `developer` on one model, a local user with no role, someone who
//! can write the state directory but holds no KEK, and a hostile peer on (or in place of) the
//! socket. Every attack returns one row; `insider_attacks_table` runs them all and prints the
//! table (`ATTACK|foothold|attack|outcome|state` lines, gathered by `scripts/insider.sh`).
//! An attack that succeeds fails the test: the rows only ever say how it was stopped.

mod cli;
mod mount;
mod ops;
pub mod store;

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
#[allow(dead_code)] // the socket and mount attacks use these
pub const NO_ROLE: &str = "local user, no role";
pub const STATE_WRITER: &str = "writes the state dir, no KEK";
#[allow(dead_code)]
pub const SOCKET_PEER: &str = "hostile socket peer";

pub type Attack = fn() -> Vec<Row>;

/// Every attack, in table order.
const ATTACKS: &[(&str, Attack)] = &[
    ("ops_dev_base", ops::dev_base_prepared_by_another_user),
    ("ops_socket_symlink", ops::socket_path_symlink),
    ("ops_retention", ops::promote_to_archived_then_gc),
    ("ops_store_wide_reads", ops::store_wide_reads_without_a_role),
    ("ops_not_dumpable", ops::arcad_memory_from_its_own_user),
    ("ops_old_kek", ops::old_kek_after_rotation),
    ("store_audit_wipe", store::audit_wipe),
    ("store_replay_acl", store::replay_acl),
    ("store_replay_policy", store::replay_policy),
    ("store_replay_version", store::replay_version),
    ("store_dedup_probe", store::dedup_probe),
    ("mnt_gc_racing_get_and_verify", mount::gc_racing_a_get),
    (
        "mnt_uploads_racing_on_one_path",
        mount::uploads_racing_on_one_path,
    ),
    (
        "mnt_repushed_version_cached_pages",
        mount::repushed_version_under_cached_pages,
    ),
    (
        "mnt_listing_as_outsiders",
        mount::mount_listing_as_outsiders,
    ),
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
    let state = |r: &Row| match r.state_unchanged {
        Some(true) => "unchanged",
        Some(false) => "CHANGED",
        None => "-",
    };
    for r in &rows {
        println!(
            "ATTACK|{}|{}|{}|{}",
            r.foothold,
            r.attack,
            r.outcome.as_str(),
            state(r)
        );
    }
    println!(
        "\n{:<30} {:<66} {:<20} state",
        "foothold", "attack", "outcome"
    );
    for r in &rows {
        println!(
            "{:<30} {:<66} {:<20} {}",
            r.foothold,
            r.attack,
            r.outcome.as_str(),
            state(r)
        );
    }
    assert!(rows.iter().all(|r| r.state_unchanged != Some(false)));
    if only.is_none() {
        assert!(!rows.is_empty(), "no attack ran");
    }
}
