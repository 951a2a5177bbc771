//! Windows' upper-case table for registry name comparison.
