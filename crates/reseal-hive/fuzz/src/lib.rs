//! Fuzz targets for `reseal-hive`; the shared exercise code and reference
//! model live in [`harness`] (also compiled into the crate's stable tests).
#![forbid(unsafe_code)]

pub mod harness;
