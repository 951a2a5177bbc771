use proptest::prelude::*;

use super::*;
use crate::HiveError;

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn utf16le_file(text: &str) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFE];
    v.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    v
}

fn err_line(r: Result<RegDocument, HiveError>) -> (usize, String) {
    match r {
        Err(HiveError::RegSyntax { line, message, .. }) => (line, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

const SAMPLE: &str = "Windows Registry Editor Version 5.00\r\n\
\r\n\
; a comment\r\n\
[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\r\n\
@=\"default \\\"quoted\\\" C:\\\\dir\"\r\n\
\"Name \\\"x\\\"\"=dword:0000002a\r\n\
\"Bin\"=hex:01,02,03,\\\r\n\
  04,05 ; trailing comment\r\n\
\"Multi\"=hex(7):61,00,00,00,\\\r\n\
\r\n\
    00,00,\r\n\
\"Q\"=hex(b):01,00,00,00,00,00,00,00\r\n\
\"Odd\"=hex(100000):\r\n\
\"Gone\"=-\r\n\
@=-\r\n\
\r\n\
[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test\\a [b] c]]\r\n\
  \"Indented\" = \"ok\" \r\n\
\r\n\
[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Old]\r\n";

#[test]
fn parses_regedit_layout() {
    let doc = parse_reg("t.reg", &utf16le_file(SAMPLE)).unwrap();
    assert_eq!(doc.version, RegVersion::V5);
    assert_eq!(doc.encoding, RegEncoding::Utf16Le);
    let k = r"HKEY_LOCAL_MACHINE\SOFTWARE\Test".to_string();
    let set = |name: Option<&str>, value_type: u32, data: Vec<u8>| RegOp::SetValue {
        path: k.clone(),
        name: name.map(str::to_string),
        value_type,
        data,
    };
    let expected = vec![
        RegOp::CreateKey { path: k.clone() },
        set(None, 1, utf16z(r#"default "quoted" C:\dir"#)),
        set(Some(r#"Name "x""#), 4, vec![0x2a, 0, 0, 0]),
        set(Some("Bin"), 3, vec![1, 2, 3, 4, 5]),
        set(Some("Multi"), 7, vec![0x61, 0, 0, 0, 0, 0]),
        set(Some("Q"), 11, vec![1, 0, 0, 0, 0, 0, 0, 0]),
        set(Some("Odd"), 0x100000, vec![]),
        RegOp::DeleteValue {
            path: k.clone(),
            name: Some("Gone".into()),
        },
        RegOp::DeleteValue {
            path: k.clone(),
            name: None,
        },
        RegOp::CreateKey {
            path: format!("{k}\\a [b] c]"),
        },
        RegOp::SetValue {
            path: format!("{k}\\a [b] c]"),
            name: Some("Indented".into()),
            value_type: 1,
            data: utf16z("ok"),
        },
        RegOp::DeleteKey {
            path: r"HKEY_LOCAL_MACHINE\SOFTWARE\Old".into(),
        },
    ];
    assert_eq!(doc.ops, expected);

    // Same text as UTF-8 with BOM, with LF only, and without BOM.
    let lf = SAMPLE.replace("\r\n", "\n");
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(lf.as_bytes());
    for bytes in [bom, lf.clone().into_bytes(), SAMPLE.as_bytes().to_vec()] {
        let d = parse_reg("t.reg", &bytes).unwrap();
        assert_eq!(d.encoding, RegEncoding::Utf8);
        assert_eq!(d.ops, expected);
    }
    // UTF-16LE without byte order mark.
    let raw: Vec<u8> = lf.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let d = parse_reg("t.reg", &raw).unwrap();
    assert_eq!((d.encoding, d.ops), (RegEncoding::Utf16Le, expected));
}

#[test]
fn regedit4_strings_are_ansi_and_stored_as_utf16() {
    // "caf\xe9" and the euro sign 0x80 of Windows-1252: not valid UTF-8.
    let mut bytes = b"REGEDIT4\r\n\r\n[HKEY_CURRENT_USER\\X]\r\n\"n\"=\"caf".to_vec();
    bytes.extend_from_slice(&[0xE9, 0x80]);
    bytes.extend_from_slice(b"\"\r\n");
    let doc = parse_reg("a.reg", &bytes).unwrap();
    assert_eq!(doc.version, RegVersion::V4);
    assert_eq!(
        doc.ops[1],
        RegOp::SetValue {
            path: r"HKEY_CURRENT_USER\X".into(),
            name: Some("n".into()),
            value_type: 1,
            data: utf16z("caf\u{e9}\u{20ac}"),
        }
    );
}

#[test]
fn syntax_errors_have_lines_and_say_what() {
    let (line, msg) = err_line(parse_reg("x.reg", b"hello\n"));
    assert_eq!(line, 1);
    assert!(
        msg.contains("expected the header") && msg.contains("hello"),
        "{msg}"
    );

    let (line, _) = err_line(parse_reg("x.reg", b""));
    assert_eq!(line, 1);

    let hdr = "Windows Registry Editor Version 5.00\n\n";
    let cases: &[(&str, usize, &str)] = &[
        ("\"v\"=dword:1\n", 3, "before this value"),
        ("[k]\n\"v\"=dword:123456789\n", 4, "1 to 8 hex digits"),
        ("[k]\n\"v\"=dword:xyz\n", 4, "1 to 8 hex digits"),
        ("[k]\n\"v\"=hex:01,2g\n", 4, "`,`"),
        ("[k]\n\"v\"=hex:01,\\\n  02,zz\n", 5, "hex byte"),
        ("[k]\n\"v\"=hex:123\n", 4, "hex byte"),
        ("[k]\n\"v\"=hex(1ffffffff):00\n", 4, "at most ffffffff"),
        ("[k]\n\"v\"=hex(x):00\n", 4, "`):`"),
        ("[k]\n\"v\"=\"abc\n", 4, "closing `\"`"),
        ("[k]\n\"v\"=\"a\\nb\"\n", 4, "`\\n`"),
        ("[k]\n\"v\"=\"a\" junk\n", 4, "junk"),
        ("[k]\n\"v\" dword:1\n", 4, "expected `=`"),
        ("[k]\n\"v\"=str:1\n", 4, "value data"),
        ("[k\n", 3, "`]`"),
        ("[k] x\n", 3, "after `]`"),
        ("[]\n", 3, "key name"),
        ("[-]\n", 3, "key name"),
        ("[k]\nfoo\n", 4, "found \"foo\""),
        ("[-k]\n\"v\"=-\n", 4, "before this value"),
    ];
    for (body, want_line, want) in cases {
        let text = format!("{hdr}{body}");
        let (line, msg) = err_line(parse_reg("x.reg", text.as_bytes()));
        assert_eq!(line, *want_line, "{body:?}: {msg}");
        assert!(msg.contains(want), "{body:?}: {msg}");
    }

    // Odd UTF-16 length and unpaired surrogate.
    let mut odd = utf16le_file("Windows Registry Editor Version 5.00\r\n");
    odd.push(b'x');
    err_line(parse_reg("x.reg", &odd));
    let mut bad = utf16le_file("Windows Registry Editor Version 5.00\r\n[k]\r\n");
    bad.extend_from_slice(&[0x00, 0xD8, b'a', 0]);
    assert_eq!(err_line(parse_reg("x.reg", &bad)).0, 3);
    assert_eq!(err_line(parse_reg("x.reg", &[0xFE, 0xFF, 0, b'W'])).0, 1);
}

#[test]
fn hex_quirks_accepted() {
    let text = "REGEDIT4\n[k]\n\"a\"=hex:1, 2 ,FF,\n\"b\"=HEX(2):\\\n\n; c\n  41,00,\\\n\n[k2]\n\"c\"=hex:\\\n";
    let doc = parse_reg("q.reg", text.as_bytes()).unwrap();
    let data: Vec<_> = doc
        .ops
        .iter()
        .filter_map(|op| match op {
            RegOp::SetValue {
                value_type, data, ..
            } => Some((*value_type, data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        vec![(3, vec![1, 2, 0xff]), (2, vec![0x41, 0]), (3, vec![])]
    );
    assert_eq!(doc.ops.len(), 5);
}

#[test]
fn writer_chooses_regedit_representations() {
    let mut w = RegWriter::new(RegVersion::V5);
    w.key(r"HKEY_CURRENT_USER\T");
    w.value(Some(r#"q"\"#), 1, &utf16z(r#"a"b\c"#));
    w.value(Some("empty"), 1, &utf16z(""));
    w.value(Some("nonul"), 1, &[0x61, 0]);
    w.value(Some("two nul"), 1, &[0x61, 0, 0, 0, 0, 0]);
    w.value(Some("odd"), 1, &[0x61, 0, 0]);
    w.value(Some("crlf"), 1, &utf16z("a\r\n"));
    w.value(Some("d"), 4, &[1, 2, 3, 4]);
    w.value(Some("d3"), 4, &[1, 2, 3]);
    w.value(Some("b"), 3, &[]);
    w.value(None, 0x100000, &[0xAB]);
    w.delete_value(Some("gone"));
    w.delete_key(r"HKEY_CURRENT_USER\Old");
    let text = w.finish_string();
    let expected = "Windows Registry Editor Version 5.00\r\n\r\n\
        [HKEY_CURRENT_USER\\T]\r\n\
        \"q\\\"\\\\\"=\"a\\\"b\\\\c\"\r\n\
        \"empty\"=\"\"\r\n\
        \"nonul\"=hex(1):61,00\r\n\
        \"two nul\"=hex(1):61,00,00,00,00,00\r\n\
        \"odd\"=hex(1):61,00,00\r\n\
        \"crlf\"=hex(1):61,00,0d,00,0a,00,00,00\r\n\
        \"d\"=dword:04030201\r\n\
        \"d3\"=hex(4):01,02,03\r\n\
        \"b\"=hex:\r\n\
        @=hex(100000):ab\r\n\
        \"gone\"=-\r\n\
        \r\n\
        [-HKEY_CURRENT_USER\\Old]\r\n\r\n";
    assert_eq!(text, expected);

    let mut w = RegWriter::new(RegVersion::V4);
    w.key("K");
    w.value(Some("latin"), 1, &utf16z("caf\u{e9}"));
    w.value(Some("euro"), 1, &utf16z("\u{20ac}"));
    assert_eq!(
        w.finish_string(),
        "REGEDIT4\r\n\r\n[K]\r\n\"latin\"=\"caf\u{e9}\"\r\n\"euro\"=hex(1):ac,20,00,00\r\n\r\n"
    );
}

#[test]
fn writer_wraps_hex_like_regedit() {
    // Layout of a regedit export of a 100-byte binary value named
    // "ProductId": 21 bytes on the first line (79 characters plus `\`),
    // then 25 bytes per line indented by two spaces.
    let data: Vec<u8> = (0..100u8).collect();
    let mut w = RegWriter::new(RegVersion::V5);
    w.key("K");
    w.value(Some("ProductId"), 3, &data);
    let text = w.finish_string();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let value_lines = &lines[3..8];
    assert_eq!(value_lines[0].len(), 16 + 21 * 3 + 1);
    assert!(value_lines[0].starts_with("\"ProductId\"=hex:00,01,"));
    assert!(value_lines[0].ends_with(",14,\\"));
    for l in &value_lines[1..4] {
        assert!(l.starts_with("  ") && l.ends_with(",\\"), "{l}");
        assert_eq!(l.len(), 2 + 25 * 3 + 1);
    }
    // 21 + 3 * 25 = 96: four bytes remain, no trailing comma.
    assert_eq!(value_lines[4], "  60,61,62,63");
    assert_eq!(lines[8], "");

    // A name longer than the wrap column breaks after every byte.
    let long = "n".repeat(90);
    let mut w = RegWriter::new(RegVersion::V5);
    w.key("K");
    w.value(Some(&long), 7, &[1, 2]);
    assert!(
        w.finish_string()
            .contains(&format!("\"{long}\"=hex(7):01,\\\r\n  02\r\n"))
    );
}

#[test]
fn finish_encodings() {
    let mut w = RegWriter::new(RegVersion::V5);
    w.key("K");
    let bytes = w.clone().finish(RegEncoding::Utf16Le);
    assert_eq!(&bytes[..4], &[0xFF, 0xFE, b'W', 0]);
    assert_eq!(bytes, utf16le_file(&w.clone().finish_string()));
    assert_eq!(
        w.clone().finish(RegEncoding::Utf8),
        w.finish_string().into_bytes()
    );
}

#[test]
fn prefix_stripping() {
    assert_eq!(
        strip_prefix_ci(r"HKLM\SOFTWARE\A\B", r"hklm\software"),
        Some(r"A\B")
    );
    assert_eq!(
        strip_prefix_ci(r"HKLM\SOFTWARE", r"HKLM\SOFTWARE\"),
        Some("")
    );
    assert_eq!(strip_prefix_ci(r"HKLM\SOFTWAREX", r"HKLM\SOFTWARE"), None);
    assert_eq!(strip_prefix_ci(r"HKLM", r"HKLM\SOFTWARE"), None);
    assert_eq!(strip_prefix_ci("é\\x", "É"), None);
    assert_eq!(strip_prefix_ci("\u{e9}\\x", "\u{e9}"), Some("x"));
    assert_eq!(strip_prefix_ci("a", ""), None);
    assert_eq!(strip_prefix_ci(r"\a", ""), Some("a"));
}

/// One writer call: (kind, path, name, type, data).
type Step = (u8, String, Option<String>, u32, Vec<u8>);

/// What `RegWriter` is asked to write.
fn op_strategy() -> impl Strategy<Value = Vec<Step>> {
    let path = "[^\r\n-][^\r\n]{0,20}";
    let name = proptest::option::of("[^\r\n]{0,12}");
    let value_type = prop_oneof![0u32..12, any::<u32>()];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[^\0]{0,40}".prop_map(|s| s
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()),
    ];
    proptest::collection::vec((0u8..6, path, name, value_type, data), 0..20)
}

fn write_ops(version: RegVersion, steps: &[Step]) -> (RegWriter, Vec<RegOp>) {
    let mut w = RegWriter::new(version);
    let mut ops = Vec::new();
    let mut current: Option<String> = None;
    for (kind, path, name, value_type, data) in steps {
        match (kind, &current) {
            (0, _) | (_, None) => {
                w.key(path);
                ops.push(RegOp::CreateKey { path: path.clone() });
                current = Some(path.clone());
            }
            (1, _) => {
                w.delete_key(path);
                ops.push(RegOp::DeleteKey { path: path.clone() });
                current = None;
            }
            (2, Some(k)) => {
                w.delete_value(name.as_deref());
                ops.push(RegOp::DeleteValue {
                    path: k.clone(),
                    name: name.clone(),
                });
            }
            (_, Some(k)) => {
                // REG_SZ-like data is more interesting with string types.
                let value_type = if *kind == 3 { 1 } else { *value_type };
                w.value(name.as_deref(), value_type, data);
                ops.push(RegOp::SetValue {
                    path: k.clone(),
                    name: name.clone(),
                    value_type,
                    data: data.clone(),
                });
            }
        }
    }
    (w, ops)
}

proptest! {
    #[test]
    fn round_trip_is_exact(steps in op_strategy(), v4 in any::<bool>(), utf16 in any::<bool>()) {
        let version = if v4 { RegVersion::V4 } else { RegVersion::V5 };
        let encoding = if utf16 { RegEncoding::Utf16Le } else { RegEncoding::Utf8 };
        let (w, ops) = write_ops(version, &steps);
        let bytes = w.finish(encoding);
        let doc = parse_reg("rt.reg", &bytes).unwrap();
        prop_assert_eq!(doc.version, version);
        prop_assert_eq!(doc.encoding, encoding);
        prop_assert_eq!(doc.ops, ops);
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_reg("f.reg", &bytes);
    }

    #[test]
    fn never_panics_on_reg_like_text(
        body in proptest::collection::vec(
            prop_oneof![
                Just("[".to_string()), Just("]".to_string()), Just("\"".to_string()),
                Just("\\".to_string()), Just("=".to_string()), Just("@".to_string()),
                Just("-".to_string()), Just(",".to_string()), Just(";".to_string()),
                Just("hex(".to_string()), Just("):".to_string()), Just("hex:".to_string()),
                Just("dword:".to_string()), Just("\r\n".to_string()), Just("\n".to_string()),
                Just("\r".to_string()), Just(" ".to_string()), "[0-9a-fA-Fé€]{1,3}",
            ],
            0..60,
        )
    ) {
        let text = format!("Windows Registry Editor Version 5.00\n{}", body.concat());
        let _ = parse_reg("f.reg", text.as_bytes());
        let _ = parse_reg("f.reg", &utf16le_file(&text));
    }
}
