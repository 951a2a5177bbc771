//! Key and value names: storage encoding, Windows' case-insensitive order,
//! lh hashes and lf hints.
