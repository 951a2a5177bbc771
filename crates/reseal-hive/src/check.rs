//! The structural checker (every rule of the regf validation checklist).
