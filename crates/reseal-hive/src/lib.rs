//! reseal-hive: a Windows registry hive (regf) engine.
//!
//! It opens a hive from a path or from bytes, replays its transaction logs
//! when the hive is dirty, reads keys, values, classes and security
//! descriptors, edits them in place on an owned byte buffer (creating,
//! deleting and renaming keys, setting and deleting values, rewriting SIDs),
//! checks the result structurally and saves it atomically with its logs
//! emptied, so that Windows and every independent reader accept it.
//!
//! Non-goals: volatile keys (they never reach a file), KTM transaction logs
//! (`.blf`/`.regtrans-ms`; a hive with pending transactions is reported, not
//! replayed), and layered-key semantics of version 1.6 hives beyond keeping
//! their bytes intact.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base_block;
pub mod bytes;
pub mod check;
pub mod error;
pub mod log;
pub mod names;
pub mod regfile;
pub mod security;
pub mod sid;
pub mod sid_scan;
pub mod upcase;

pub use error::{HiveError, Result};
