//! Property tests of the editor (checklist §17 item 33): random sequences of
//! create / delete / rename key, set / delete value (every common type and
//! odd ones, 0..=40 000 bytes, so big data too), set class and set security
//! are applied to new 1.3 and 1.5 hives and mirrored in an in-memory model
//! (children and values keyed by the upper-cased name, which orders them as
//! `cmp_names` does). After every operation the checker must find no error;
//! at the end the saved bytes, reopened with `Hive::from_bytes`, must read
//! back exactly as the model: names, types, data, classes, descriptors, and
//! subkeys in Windows' order.
//!
//! Names are built from fragments holding `_`, `[`, `` ` ``, `ß`, `µ`, `ÿ`,
//! `À`, text outside Latin-1, a surrogate pair, and fragments that make
//! names prefixes of one another (see `harness::NAME_PARTS`). Separate
//! properties create more siblings than one leaf holds (> 507 in 1.5,
//! > 1012 in 1.3) so that the subkey list becomes an `ri`.
//!
//! Cases default to 32 (8 for the big-list properties); `PROPTEST_CASES`
//! raises them.

#[path = "../fuzz/src/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::{DATA_LENGTHS, NAME_PARTS, Op, Session};
use proptest::prelude::*;
use reseal_hive::names::cmp_names;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn name_parts() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(0..NAME_PARTS.len() as u8, 1..4),
        // Sometimes past the 255-unit limit (must be refused).
        1 => prop::collection::vec(prop_oneof![Just(255u8), 0..NAME_PARTS.len() as u8], 3..7),
    ]
}

fn value_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => prop::collection::vec(0..NAME_PARTS.len() as u8, 1..4),
    ]
}

fn value_type() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        1 => any::<u32>(),
    ]
}

fn data_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(DATA_LENGTHS.to_vec()),
        2 => 0u32..64,
        1 => 0u32..=40_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = any::<u16>();
    prop_oneof![
        6 => (key, name_parts()).prop_map(|(parent, name)| Op::Create { parent, name }),
        1 => (key, 0u16..40, any::<u8>())
            .prop_map(|(parent, count, stem)| Op::CreateMany { parent, count, stem }),
        2 => key.prop_map(|key| Op::Delete { key }),
        2 => (key, name_parts()).prop_map(|(key, name)| Op::Rename { key, name }),
        6 => (key, value_name(), value_type(), data_len(), any::<u8>(), any::<bool>()).prop_map(
            |(key, name, value_type, len, seed, by_id)| Op::SetValue {
                key,
                name,
                value_type,
                len,
                seed,
                by_id,
            }
        ),
        2 => (key, any::<u16>()).prop_map(|(key, value)| Op::DeleteValue { key, value }),
        2 => (key, prop::option::of(0u16..300), any::<u8>())
            .prop_map(|(key, len, seed)| Op::SetClass { key, len, seed }),
        2 => (key, any::<u8>()).prop_map(|(key, variant)| Op::SetSecurity { key, variant }),
    ]
}

fn run(minor: u32, ops: &[Op]) {
    let mut s = Session::new(minor);
    for op in ops {
        s.apply(op);
    }
    s.verify();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(32),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_edits_v1_3(ops in prop::collection::vec(op(), 1..60)) {
        run(3, &ops);
    }

    #[test]
    fn random_edits_v1_5(ops in prop::collection::vec(op(), 1..60)) {
        run(5, &ops);
    }
}

/// Ops that first fill one key with more siblings than a leaf holds, then
/// edit at random (renames and deletes inside the big list, values, ...).
fn big_list(minor: u32) -> impl Strategy<Value = Vec<Op>> {
    let leaf = if minor >= 5 { 507u16 } else { 1012 };
    (
        leaf + 1..leaf + 120,
        any::<u8>(),
        prop::collection::vec(op(), 0..30),
    )
        .prop_map(|(count, stem, rest)| {
            let mut ops = vec![
                Op::Create {
                    parent: 0,
                    name: vec![4],
                },
                // Key 1 is `_`; fill it.
                Op::CreateMany {
                    parent: 1,
                    count,
                    stem,
                },
            ];
            ops.extend(rest);
            ops
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(32).div_ceil(4),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn more_siblings_than_a_leaf_v1_3(ops in big_list(3)) {
        run(3, &ops);
    }

    #[test]
    fn more_siblings_than_a_leaf_v1_5(ops in big_list(5)) {
        run(5, &ops);
    }
}

/// The name fragments hold every character §17 item 33 asks for, and
/// fragments that are prefixes of others.
#[test]
fn name_fragments_cover_the_required_characters() {
    let all: String = NAME_PARTS.concat();
    for c in ['_', '[', '`', 'ß', 'µ', 'ÿ', 'À', '日', '\u{1F600}'] {
        assert!(all.contains(c), "{c:?} missing");
    }
    assert!(all.encode_utf16().any(|u| (0xD800..0xDC00).contains(&u)));
    assert!(
        NAME_PARTS
            .iter()
            .any(|a| NAME_PARTS.iter().any(|b| a != b && b.starts_with(a)))
    );
}

/// Deterministic ri cases at the exact leaf limits, with names in an order
/// that inserts at both ends and the middle.
#[test]
fn siblings_at_and_past_the_leaf_limit() {
    for (minor, leaf) in [(5u32, 507u16), (3, 1012)] {
        for count in [leaf, leaf + 1, 2 * leaf + 1] {
            let mut s = Session::new(minor);
            s.check_each = false;
            s.apply(&Op::Create {
                parent: 0,
                name: vec![4],
            });
            s.apply(&Op::CreateMany {
                parent: 1,
                count,
                stem: 1,
            });
            s.assert_clean();
            // Delete a few, rename one to sort first, then verify.
            for k in [2u16, 300, 600] {
                s.apply(&Op::Delete { key: k });
            }
            s.apply(&Op::Rename {
                key: 5,
                name: vec![0],
            });
            s.check_each = true;
            s.apply(&Op::SetValue {
                key: 3,
                name: vec![7],
                value_type: 3,
                len: 16_345,
                seed: 9,
                by_id: false,
            });
            s.verify();
            // The model's order (upper-cased names) is `cmp_names` order.
            let big = s.model.root.children.values().next().expect("`_` kept");
            let names: Vec<&Vec<u16>> = big.children.values().map(|k| &k.name).collect();
            assert!(names.len() >= usize::from(count) - 3);
            assert!(names.windows(2).all(|w| cmp_names(w[0], w[1]).is_lt()));
        }
    }
}
