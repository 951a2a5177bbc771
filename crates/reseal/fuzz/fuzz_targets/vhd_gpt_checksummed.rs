//! A mutated VHD or raw GPT disk whose footer, dynamic-header and GPT
//! checksums are made right again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    reseal_fuzz::fix_vhd_gpt_checksums(&mut b);
    reseal_fuzz::exercise(&b);
});
