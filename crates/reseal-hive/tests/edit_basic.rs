//! Basic editing on a fresh hive: every edit reads back through our reader
//! and the structural checker stays clean.

use reseal_hive::Hive;

fn assert_clean(h: &Hive) {
    let r = h.check();
    let errs: Vec<String> = r.errors().map(|v| v.to_string()).collect();
    assert!(errs.is_empty(), "check errors: {errs:#?}");
}

#[test]
fn create_set_delete_rename_on_new_hives() {
    for minor in [3, 5] {
        let mut h = Hive::create("test.hiv", minor, "ROOT").unwrap();
        assert_clean(&h);
        h.create_key("Software\\Vendor\\Product").unwrap();
        h.create_key("Software\\Äpfel").unwrap();
        h.create_key("Software\\日本").unwrap();
        h.set_value("Software\\Vendor", "Name", 1, &utf16z("hello"))
            .unwrap();
        h.set_value("Software\\Vendor", "", 4, &7u32.to_le_bytes())
            .unwrap();
        h.set_value("Software\\Vendor", "empty", 3, &[]).unwrap();
        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        h.set_value("Software\\Vendor", "big", 3, &big).unwrap();
        assert_clean(&h);
        let k = h.key("software\\VENDOR").unwrap();
        let v = h.value(k, "BIG").unwrap().unwrap();
        assert_eq!(v.data, big);
        assert_eq!(h.value(k, "").unwrap().unwrap().data, 7u32.to_le_bytes());
        assert_eq!(h.value(k, "empty").unwrap().unwrap().data, Vec::<u8>::new());
        // Replace big data by small, small by big.
        h.set_value("Software\\Vendor", "big", 3, b"short data")
            .unwrap();
        h.set_value("Software\\Vendor", "Name", 1, &big).unwrap();
        assert_clean(&h);
        let k = h.key("Software\\Vendor").unwrap();
        assert_eq!(h.value(k, "big").unwrap().unwrap().data, b"short data");
        assert_eq!(h.value(k, "name").unwrap().unwrap().data, big);
        // Many subkeys to force an ri.
        for i in 0..1200 {
            h.create_key(&format!("Many\\key{i:05}")).unwrap();
        }
        assert_clean(&h);
        assert_eq!(h.subkeys(h.key("Many").unwrap()).unwrap().len(), 1200);
        assert!(h.open_key("Many\\KEY00777").unwrap().is_some());
        h.rename_key(
            "Many\\key00777",
            "a-much-longer-name-than-before-to-force-a-move",
        )
        .unwrap();
        assert!(h.open_key("Many\\key00777").unwrap().is_none());
        assert!(
            h.open_key("Many\\A-MUCH-LONGER-NAME-THAN-BEFORE-TO-FORCE-A-MOVE")
                .unwrap()
                .is_some()
        );
        h.delete_key("Many").unwrap();
        h.delete_value("Software\\Vendor", "big").unwrap();
        assert_clean(&h);
        assert!(h.open_key("Many").unwrap().is_none());
        let bytes = h.to_bytes();
        let h2 = Hive::from_bytes("reopened", bytes).unwrap();
        let k = h2.key("Software\\Vendor").unwrap();
        assert_eq!(h2.values(k).unwrap().len(), 3);
        assert!(h2.open_key("Software\\日本").unwrap().is_some());
        assert!(h2.open_key("Software\\äPFEL").unwrap().is_some());
    }
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}
