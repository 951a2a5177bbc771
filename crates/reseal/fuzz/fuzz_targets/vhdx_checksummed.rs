//! A mutated VHDX whose header and region-table checksums are made right
//! again, so the metadata, BAT, log and parent-locator code is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    if b.len() >= 8 {
        b[..8].copy_from_slice(b"vhdxfile");
    }
    reseal_fuzz::fix_vhdx_checksums(&mut b);
    reseal_fuzz::exercise(&b);
});
