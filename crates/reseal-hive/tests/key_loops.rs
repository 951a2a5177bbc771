//! Hives whose key tree loops back (a subkey list naming an ancestor or the
//! key itself, as a mutated hive can): every reader that walks the tree —
//! `dump`, `.reg` export of the whole hive or of a subtree, the structural
//! check — reports the loop instead of walking it forever.

use reseal_hive::Hive;
use reseal_hive::check::check_image;
use reseal_hive::regfile::RegVersion;

/// File offset of a cell's payload.
fn payload(cell: u32) -> usize {
    4096 + cell as usize + 4
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A hive `ROOT\A\B\C` (values on each key) whose key `from` is given the
/// subkey list of key `to` (so `from` lists `to`'s children as its own).
fn looping_hive(from: &str, to: &str) -> Vec<u8> {
    let mut h = Hive::create("LOOP", 5, "ROOT").unwrap();
    h.create_key(r"A\B\C").unwrap();
    for k in ["A", r"A\B", r"A\B\C"] {
        h.set_value(k, "v", 1, b"x\0\0\0").unwrap();
    }
    let from_cell = h.key(from).unwrap().cell_index();
    let to_cell = h.key(to).unwrap().cell_index();
    let mut bytes = h.to_bytes();
    let (list, count) = (
        get_u32(&bytes, payload(to_cell) + 28),
        get_u32(&bytes, payload(to_cell) + 20),
    );
    assert!(count > 0, "{to} has subkeys");
    put_u32(&mut bytes, payload(from_cell) + 28, list);
    put_u32(&mut bytes, payload(from_cell) + 20, count);
    bytes
}

#[test]
fn loops_are_reported_by_dump_export_and_check() {
    // C lists A (through the root's list): C -> A -> B -> C -> ...
    // B lists B itself (through A's list).
    for (from, to) in [(r"A\B\C", ""), (r"A\B", "A"), ("A", "")] {
        let bytes = looping_hive(from, to);
        let hive = Hive::from_bytes("LOOP", bytes.clone()).unwrap();

        let e = hive.dump().expect_err("dump must see the loop");
        assert!(e.to_string().contains("key tree"), "{from}: {e}");

        for start in ["", "A"] {
            let e = hive
                .export_reg(start, "", RegVersion::V5)
                .err()
                .unwrap_or_else(|| panic!("{from}: export of {start:?} must see the loop"));
            assert!(e.to_string().contains("key tree"), "{from}: {e}");
        }

        let report = check_image("LOOP", &bytes);
        assert!(
            !report.is_clean(),
            "{from}: the check passes a looping tree"
        );
    }
}

/// The same hive without the mutation exports and dumps in full (the
/// refusals above come from the loop).
#[test]
fn the_unmutated_hive_exports() {
    let mut h = Hive::create("LOOP", 5, "ROOT").unwrap();
    h.create_key(r"A\B\C").unwrap();
    let hive = Hive::from_bytes("LOOP", h.to_bytes()).unwrap();
    assert_eq!(hive.dump().unwrap().keys.len(), 4);
    let text = String::from_utf8_lossy(
        &hive
            .export_reg("A", "", RegVersion::V5)
            .unwrap()
            .finish(reseal_hive::regfile::RegEncoding::Utf8),
    )
    .to_string();
    assert!(text.contains(r"[\A\B\C]"), "{text}");
}
