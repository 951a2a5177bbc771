//! Transaction-log recovery of dirty hives (old DIRT and new HvLE formats).
