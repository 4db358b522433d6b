//! The six DLM lock modes and their compatibility matrix ([`Mode::compatible`]).
//!
//! Owns the modes, their names (`NL CR CW PR PW EX`) and which pairs may be held together. Does
//! not own where a mode lives in the table file (`table`) nor how it is taken (`owner`).

use std::fmt;

/// The six DLM lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Null: compatible with everything; holds nothing in the table.
    Nl,
    /// Concurrent read.
    Cr,
    /// Concurrent write.
    Cw,
    /// Protected read (shared); the POSIX read lock on ranges.
    Pr,
    /// Protected write.
    Pw,
    /// Exclusive; the POSIX write lock on ranges.
    Ex,
}

impl Mode {
    /// Every mode, in matrix order.
    pub const ALL: [Mode; 6] = [Mode::Nl, Mode::Cr, Mode::Cw, Mode::Pr, Mode::Pw, Mode::Ex];

    /// The standard DLM compatibility matrix (symmetric).
    ///
    /// ```text
    ///       NL CR CW PR PW EX
    /// NL    y  y  y  y  y  y
    /// CR    y  y  y  y  y  n
    /// CW    y  y  y  n  n  n
    /// PR    y  y  n  y  n  n
    /// PW    y  y  n  n  n  n
    /// EX    y  n  n  n  n  n
    /// ```
    pub fn compatible(self, other: Mode) -> bool {
        use Mode::*;
        match (self, other) {
            (Nl, _) | (_, Nl) => true,
            (Ex, _) | (_, Ex) => false,
            (Cr, _) | (_, Cr) => true,
            (Cw, Cw) | (Pr, Pr) => true,
            _ => false,
        }
    }

    /// Byte of this mode inside a named block; `None` for NL (which locks nothing).
    pub(super) fn byte(self) -> Option<u64> {
        match self {
            Mode::Nl => None,
            Mode::Cr => Some(1),
            Mode::Cw => Some(2),
            Mode::Pr => Some(3),
            Mode::Pw => Some(4),
            Mode::Ex => Some(5),
        }
    }

    /// The modes (other than NL) a holder of `self` must find unheld by other owners.
    pub(super) fn incompatible(self) -> impl Iterator<Item = Mode> {
        Mode::ALL
            .into_iter()
            .filter(move |m| *m != Mode::Nl && !self.compatible(*m))
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Mode::Nl => "NL",
            Mode::Cr => "CR",
            Mode::Cw => "CW",
            Mode::Pr => "PR",
            Mode::Pw => "PW",
            Mode::Ex => "EX",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Mode::from_str`]: not one of `NL CR CW PR PW EX` (case-insensitive).
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown lock mode {0:?} (expected NL, CR, CW, PR, PW or EX)")]
pub struct ParseModeError(pub String);

impl std::str::FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Mode, ParseModeError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseModeError(s.to_owned()))
    }
}
