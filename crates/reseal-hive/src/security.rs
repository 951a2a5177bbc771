//! Self-relative security descriptors: validation and SID rewriting.
