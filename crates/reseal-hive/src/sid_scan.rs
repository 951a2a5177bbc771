//! Finding and replacing a domain SID inside arbitrary data and names.
