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

mod alloc;
pub mod base_block;
pub mod bytes;
pub mod cells;
pub mod check;
mod create;
pub mod dump;
mod edit;
pub mod error;
mod hive;
pub mod key_node;
pub mod log;
pub mod names;
mod read;
mod reg_io;
pub mod regfile;
mod save;
mod scrub;
pub mod security;
mod security_cells;
pub mod sid;
pub mod sid_rewrite;
pub mod sid_scan;
mod subkey_list;
pub mod time;
pub mod upcase;
pub mod value_node;

pub use create::default_descriptor;
pub use edit::{MAX_KEY_NAME, MAX_VALUE_NAME};
pub use error::{HiveError, Result};
pub use hive::{Hive, OpenInfo};
pub use read::{KeyId, KeyInfo, Value, split_path};
pub use reg_io::ImportStats;
pub use sid::Sid;
pub use sid_rewrite::{SidOccurrence, SidPlace, SidReport};
