//! A logical dump of a hive (keys, values, classes, security), as text or
//! as a serde structure for JSON.

use serde::Serialize;

use crate::error::Result;
use crate::hive::Hive;
use crate::time::filetime_to_iso;

/// Version of the JSON dump schema.
pub const DUMP_SCHEMA_VERSION: u32 = 1;

/// The name of a registry value type, or `REG_0x…` for other numbers.
pub fn type_name(t: u32) -> String {
    match t {
        0 => "REG_NONE".into(),
        1 => "REG_SZ".into(),
        2 => "REG_EXPAND_SZ".into(),
        3 => "REG_BINARY".into(),
        4 => "REG_DWORD".into(),
        5 => "REG_DWORD_BIG_ENDIAN".into(),
        6 => "REG_LINK".into(),
        7 => "REG_MULTI_SZ".into(),
        8 => "REG_RESOURCE_LIST".into(),
        9 => "REG_FULL_RESOURCE_DESCRIPTOR".into(),
        10 => "REG_RESOURCE_REQUIREMENTS_LIST".into(),
        11 => "REG_QWORD".into(),
        n => format!("REG_0x{n:X}"),
    }
}

/// Bytes of binary data shown in the text dump before it is cut short
/// (the JSON dump always carries all of it).
const TEXT_HEX_BYTES: usize = 64;

/// A whole-hive dump.
#[derive(Debug, Clone, Serialize)]
pub struct HiveDump {
    /// Schema version ([`DUMP_SCHEMA_VERSION`]).
    pub schema: u32,
    /// The file.
    pub file: String,
    /// Format version, e.g. "1.5".
    pub version: String,
    /// Keys, parents before children.
    pub keys: Vec<KeyDump>,
}

/// One key in a dump.
#[derive(Debug, Clone, Serialize)]
pub struct KeyDump {
    /// Path from the root ("" = root).
    pub path: String,
    /// LastWriteTime, ISO-8601 UTC.
    pub last_written: String,
    /// Class data in hex, if any.
    pub class_hex: Option<String>,
    /// Security descriptor in SDDL form.
    pub security: Option<String>,
    /// Values in stored order.
    pub values: Vec<ValueDump>,
}

/// One value in a dump.
#[derive(Debug, Clone, Serialize)]
pub struct ValueDump {
    /// Name ("" = default).
    pub name: String,
    /// Type number.
    #[serde(rename = "type")]
    pub value_type: u32,
    /// Type name.
    pub type_name: String,
    /// Raw data in hex.
    pub data_hex: String,
    /// Decoded text for string types and numbers, when decodable.
    pub text: Option<String>,
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A readable rendering of value data for strings and numbers.
pub fn render(value_type: u32, data: &[u8]) -> Option<String> {
    let units = || -> Vec<u16> {
        data.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    match value_type {
        1 | 2 | 6 => {
            let u = units();
            let end = u.iter().position(|&c| c == 0).unwrap_or(u.len());
            Some(String::from_utf16_lossy(&u[..end]))
        }
        7 => {
            let u = units();
            let parts: Vec<String> = u
                .split(|&c| c == 0)
                .filter(|p| !p.is_empty())
                .map(String::from_utf16_lossy)
                .collect();
            Some(parts.join("\n"))
        }
        4 if data.len() == 4 => {
            Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]]).to_string())
        }
        5 if data.len() == 4 => {
            Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]).to_string())
        }
        11 if data.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(data);
            Some(u64::from_le_bytes(a).to_string())
        }
        _ => None,
    }
}

impl Hive {
    /// Builds a dump of every key.
    pub fn dump(&self) -> Result<HiveDump> {
        let mut keys = Vec::new();
        self.walk(|path, k| {
            let info = self.key_info(k)?;
            let security = self
                .security_descriptor(k)
                .ok()
                .and_then(|sd| crate::security::parse_descriptor(&sd).ok())
                .map(|v| crate::security::to_sddl(&v));
            let values = self
                .values(k)?
                .into_iter()
                .map(|v| ValueDump {
                    text: render(v.value_type, &v.data),
                    data_hex: hex(&v.data),
                    type_name: type_name(v.value_type),
                    value_type: v.value_type,
                    name: v.name,
                })
                .collect();
            keys.push(KeyDump {
                path: path.to_string(),
                last_written: filetime_to_iso(info.last_written),
                class_hex: info.class.as_deref().map(hex),
                security,
                values,
            });
            Ok(())
        })?;
        Ok(HiveDump {
            schema: DUMP_SCHEMA_VERSION,
            file: self.name.clone(),
            version: format!("1.{}", self.minor),
            keys,
        })
    }
}

impl HiveDump {
    /// Human-readable text: one `[path]` line per key, then its values.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for k in &self.keys {
            s.push_str(&format!("[\\{}]  ({})\n", k.path, k.last_written));
            if let Some(c) = &k.class_hex {
                s.push_str(&format!("  (class) = {c}\n"));
            }
            for v in &k.values {
                let name = if v.name.is_empty() { "@" } else { &v.name };
                let shown = match &v.text {
                    Some(t) => format!("{t:?}"),
                    None if v.data_hex.len() > 2 * TEXT_HEX_BYTES => format!(
                        "{}... ({} bytes)",
                        &v.data_hex[..2 * TEXT_HEX_BYTES],
                        v.data_hex.len() / 2
                    ),
                    None => v.data_hex.clone(),
                };
                s.push_str(&format!("  {name} ({}) = {shown}\n", v.type_name));
            }
        }
        s
    }
}
