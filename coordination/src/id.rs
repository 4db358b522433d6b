//! The typed ids every coordination module shares: [`LeaseId`] (one process's lease), and the
//! two-part ids built from it, [`ManifestId`] and [`TxnId`] (`<owner lease id>-<16 hex>`).
//!
//! Owns the text form of each id (generation, validation, parsing, serde as a string). Does not
//! own what the ids name: leases are `lease`, manifests `manifest`, two-phase transactions
//! `two_phase`; each of those modules re-exports its id. This module sits below all of them and
//! imports none, so an id never makes one layer depend on the layer that issues it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identity of one lease: 16 lowercase hex characters, random.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LeaseId(String);

impl LeaseId {
    /// A fresh random id (64 bits: collisions between live leases are not a practical concern,
    /// and `Lease::acquire` would fail rather than share a folder).
    pub fn generate() -> LeaseId {
        LeaseId(format!("{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For ids whose text was validated as part of a larger id (manifest and transaction ids).
    pub(crate) fn from_validated(s: &str) -> LeaseId {
        debug_assert!(LeaseId::is_valid(s));
        LeaseId(s.to_owned())
    }

    pub(crate) fn is_valid(s: &str) -> bool {
        s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

/// A string that is not 16 lowercase hex characters.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid lease id {0:?}: expected 16 lowercase hex characters")]
pub struct ParseLeaseIdError(pub String);

impl FromStr for LeaseId {
    type Err = ParseLeaseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if LeaseId::is_valid(s) {
            Ok(LeaseId(s.to_owned()))
        } else {
            Err(ParseLeaseIdError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for LeaseId {
    type Error = ParseLeaseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if LeaseId::is_valid(&s) {
            Ok(LeaseId(s))
        } else {
            Err(ParseLeaseIdError(s))
        }
    }
}

impl From<LeaseId> for String {
    fn from(id: LeaseId) -> String {
        id.0
    }
}

/// Is `s` a two-part id `<16 hex>-<16 hex>` (manifest and transaction ids)?
pub(crate) fn valid_pair_id(s: &str) -> bool {
    s.len() == 33
        && s.as_bytes()[16] == b'-'
        && LeaseId::is_valid(&s[..16])
        && LeaseId::is_valid(&s[17..])
}

/// A string that is not a valid two-part id (`<16 hex>-<16 hex>`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid id {0:?}: expected <16 hex>-<16 hex>")]
pub struct ParseIdError(pub String);

/// Identity of one manifest: `<owner lease id>-<16 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ManifestId(String);

impl ManifestId {
    pub(crate) fn generate(owner: &LeaseId) -> ManifestId {
        ManifestId(format!("{owner}-{:016x}", rand::random::<u64>()))
    }

    /// The lease that created the manifest.
    pub fn owner(&self) -> LeaseId {
        LeaseId::from_validated(&self.0[..16])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ManifestId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ManifestId::try_from(s.to_owned())
    }
}

impl TryFrom<String> for ManifestId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if valid_pair_id(&s) {
            Ok(ManifestId(s))
        } else {
            Err(ParseIdError(s))
        }
    }
}

impl From<ManifestId> for String {
    fn from(id: ManifestId) -> String {
        id.0
    }
}

impl fmt::Display for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestId({})", self.0)
    }
}

/// Identity of one transaction: `<coordinator lease id>-<16 lowercase hex>`, so the coordinator
/// of a half-created folder is known without reading it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxnId(String);

impl TxnId {
    pub(crate) fn generate(coordinator: &LeaseId) -> TxnId {
        TxnId(format!("{coordinator}-{:016x}", rand::random::<u64>()))
    }

    pub fn coordinator(&self) -> LeaseId {
        LeaseId::from_validated(&self.0[..16])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TxnId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TxnId::try_from(s.to_owned())
    }
}

impl TryFrom<String> for TxnId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if valid_pair_id(&s) {
            Ok(TxnId(s))
        } else {
            Err(ParseIdError(s))
        }
    }
}

impl From<TxnId> for String {
    fn from(id: TxnId) -> String {
        id.0
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({})", self.0)
    }
}
