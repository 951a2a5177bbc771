//! A sequence of edits decoded from the input, applied to a new hive and to
//! the reference model: every edit must succeed or fail as the model says,
//! the checker must stay clean after each one, and the saved bytes must
//! reopen and read back as the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reseal_hive_fuzz::harness::{ByteReader, Op, Session};

/// Most operations per input (keeps each run short).
const MAX_OPS: usize = 48;

fuzz_target!(|data: &[u8]| {
    let mut r = ByteReader::new(data);
    let minor = [3, 4, 5, 6][usize::from(r.u8() % 4)];
    let mut s = Session::new(minor);
    let mut n = 0;
    while !r.is_empty() && n < MAX_OPS {
        // `apply` asserts a clean check after every operation.
        s.apply(&Op::decode(&mut r));
        n += 1;
    }
    s.verify();
});
