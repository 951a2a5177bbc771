//! Security identifiers: parsing, formatting, binary form.
