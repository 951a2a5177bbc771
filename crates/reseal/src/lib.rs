//! reseal: generalize captured Windows installations offline.
//!
//! The generalize engine builds on [`reseal_hive`], the registry hive engine,
//! which is re-exported here for callers that embed both.
#![forbid(unsafe_code)]

pub use reseal_hive as hive;
