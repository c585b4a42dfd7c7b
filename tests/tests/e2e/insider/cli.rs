//! Issue #8 attacks: see `mod.rs`.

#[allow(unused_imports)]
use super::{Outcome, Row};
