//! Rewriting a machine (domain) SID everywhere in a hive: security
//! descriptors (and the unused bytes inside them), key names, value names
//! and value data, whether the SID is the whole name or string or a part
//! of a longer one (`…%5CS-1-5-21-A-B-C-1001-MergedResources-1.pri`).

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::names::to_display;
use crate::read::KeyId;
use crate::security::{SdLocation, rewrite_descriptor_domain};
use crate::sid::Sid;
use crate::sid_scan::{DomainSidReplacer, SidForm, is_embedded, name_is_embedded};

/// Where one occurrence of the SID was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SidPlace {
    /// Inside a security descriptor (the key is the first one using it).
    SecurityDescriptor {
        /// Which part of the descriptor.
        location: SdLocation,
        /// How many keys share this descriptor.
        keys_sharing: usize,
    },
    /// In the key's own name.
    KeyName {
        /// The name after the rewrite (same as before when only scanning).
        new_name: String,
        /// The SID is part of a longer name (not the whole name).
        substring: bool,
    },
    /// In a value's name.
    ValueName {
        /// The value's name before the rewrite.
        value: String,
        /// The SID is part of a longer name (not the whole name).
        substring: bool,
    },
    /// In a value's data.
    ValueData {
        /// The value's name.
        value: String,
        /// Byte offset in the original data.
        offset: usize,
        /// Encoding of the occurrence.
        form: SidForm,
        /// A string SID inside a longer string (never for binary SIDs).
        substring: bool,
    },
}

/// One occurrence of the SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidOccurrence {
    /// Path of the key (before any rename), from the root.
    pub key_path: String,
    /// Where in or under that key.
    pub place: SidPlace,
}

/// The outcome of [`Hive::rewrite_sids`] or [`Hive::find_sids`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SidReport {
    /// Every occurrence, in key order.
    pub occurrences: Vec<SidOccurrence>,
    /// Security cells whose descriptor names the SID (rewritten).
    pub descriptors: usize,
    /// Keys renamed.
    pub key_names: usize,
    /// Values renamed.
    pub value_names: usize,
    /// Values whose data changed.
    pub value_data: usize,
    /// Of `key_names`, keys whose name holds the SID inside a longer name.
    pub substring_key_names: usize,
    /// Of `value_names`, values whose name holds the SID inside a longer
    /// name.
    pub substring_value_names: usize,
    /// String SIDs (UTF-16 or ASCII) found inside longer strings in value
    /// data (occurrences, not values).
    pub substring_value_data: usize,
    /// Security cells whose unused bytes (ACL slack, gaps, bytes after the
    /// last component) were zeroed; includes cells whose only trace of the
    /// old domain was there.
    pub descriptor_slack: usize,
}

impl Hive {
    /// Lists every occurrence of `domain` (the SID itself or an account SID
    /// under it) without changing anything.
    pub fn find_sids(&self, domain: &Sid) -> Result<SidReport> {
        Ok(self.plan_sids(domain, domain)?.report)
    }

    /// Rewrites every occurrence of the domain SID `old` into `new` (same
    /// RIDs): in every security descriptor (owner, group, each ACE of DACL
    /// and SACL including object and callback ACEs), in key names (keys are
    /// renamed and re-sorted), value names and value data (binary SIDs at any
    /// offset, UTF-16LE and ASCII string forms, whole or inside longer
    /// text). Returns each occurrence. The unused bytes inside every
    /// descriptor rewritten, or holding the old domain's sub-authorities
    /// (ACL slack, gaps), are zeroed with their sizes kept. When anything
    /// was rewritten, unused space (free cells and slack after records) is
    /// zeroed too, so no stale copy of the old SID stays behind.
    ///
    /// A rename that would give a key or value the name of a sibling, or a
    /// key a name longer than 255 characters, is refused
    /// ([`HiveError::Refused`]) before anything changes.
    pub fn rewrite_sids(&mut self, old: &Sid, new: &Sid) -> Result<SidReport> {
        self.ensure_writable()?;
        self.apply_sid_plan(old, new)
    }

    fn plan_sids(&self, old: &Sid, new: &Sid) -> Result<SidPlan> {
        let mut keys = Vec::new();
        self.walk(|path, k| {
            keys.push((path.to_string(), k));
            Ok(())
        })?;
        let mut plan = SidPlan::default();
        let replacer = DomainSidReplacer::new(old, new);
        let mut users: HashMap<u32, Vec<KeyId>> = HashMap::new();
        let mut first_path: HashMap<u32, String> = HashMap::new();
        for (path, k) in &keys {
            let sk = self.key_node(*k)?.security;
            users.entry(sk).or_default().push(*k);
            first_path.entry(sk).or_insert_with(|| path.clone());
        }
        for sk in self.sk_ring()? {
            let sd = self.sk_descriptor(sk)?;
            if let Some(r) = rewrite_descriptor_domain(sd, old, new)? {
                let u = users.get(&sk).cloned().unwrap_or_default();
                if r.slack_bytes > 0 {
                    plan.report.descriptor_slack += 1;
                }
                if !r.hits.is_empty() {
                    plan.report.descriptors += 1;
                }
                for h in r.hits {
                    plan.report.occurrences.push(SidOccurrence {
                        key_path: first_path.get(&sk).cloned().unwrap_or_default(),
                        place: SidPlace::SecurityDescriptor {
                            location: h.location,
                            keys_sharing: u.len(),
                        },
                    });
                }
                plan.descriptors.push((sk, r.descriptor, u));
            }
        }
        for (path, k) in &keys {
            for (pos, vi) in self.value_indexes(*k)?.into_iter().enumerate() {
                let v = self.value_node(vi)?;
                let vname = to_display(&v.name);
                let new_name = replacer.replace_in_units(&v.name);
                if new_name.is_some() {
                    let substring = name_is_embedded(&v.name);
                    plan.report.occurrences.push(SidOccurrence {
                        key_path: path.clone(),
                        place: SidPlace::ValueName {
                            value: vname.clone(),
                            substring,
                        },
                    });
                    plan.report.value_names += 1;
                    plan.report.substring_value_names += usize::from(substring);
                }
                let data = self.value_bytes(&v)?;
                let new_data = if old == new {
                    let hits = replacer.find(&data);
                    (!hits.is_empty()).then(|| (data.to_vec(), hits))
                } else {
                    replacer.replace(&data)
                };
                if let Some((_, hits)) = &new_data {
                    for h in hits {
                        let substring = is_embedded(&data, h);
                        plan.report.substring_value_data += usize::from(substring);
                        plan.report.occurrences.push(SidOccurrence {
                            key_path: path.clone(),
                            place: SidPlace::ValueData {
                                value: vname.clone(),
                                offset: h.offset,
                                form: h.form,
                                substring,
                            },
                        });
                    }
                    plan.report.value_data += 1;
                }
                if new_name.is_some() || new_data.is_some() {
                    plan.values.push(ValueChange {
                        key: *k,
                        pos,
                        vk: vi,
                        value_type: v.value_type,
                        new_name,
                        new_data: new_data.map(|(d, _)| d),
                    });
                }
            }
            let name = self.key_node(*k)?.name;
            if let Some(n) = replacer.replace_in_units(&name) {
                let new_name = to_display(&n);
                let substring = name_is_embedded(&name);
                plan.report.occurrences.push(SidOccurrence {
                    key_path: path.clone(),
                    place: SidPlace::KeyName {
                        new_name: new_name.clone(),
                        substring,
                    },
                });
                plan.report.key_names += 1;
                plan.report.substring_key_names += usize::from(substring);
                plan.renames.push((*k, path.clone(), n));
            }
        }
        Ok(plan)
    }

    /// Refuses, before anything changes, a rename that would give a key or
    /// value the name of a sibling (compared as Windows does, ignoring
    /// case) or a key name longer than Windows allows.
    fn check_sid_renames(&self, plan: &SidPlan) -> Result<()> {
        let refuse = |path: &str, reason: String| HiveError::Refused {
            file: self.name.clone(),
            path: path.to_string(),
            reason,
        };
        for (k, path, n) in &plan.renames {
            let shown = to_display(n);
            if n.len() > crate::MAX_KEY_NAME {
                return Err(refuse(
                    path,
                    format!(
                        "after the SID rewrite the key name would have {} characters, more than the {} Windows allows: {shown:?}",
                        n.len(),
                        crate::MAX_KEY_NAME
                    ),
                ));
            }
            let parent = KeyId(self.key_node(*k)?.parent);
            if *k == self.root() {
                continue;
            }
            if let Some(other) = self.subkey_units(parent, n)? {
                if other != *k {
                    return Err(refuse(
                        path,
                        format!(
                            "the SID rewrite would rename this key to {shown:?}, the name of an existing sibling; remove or rename one of them first"
                        ),
                    ));
                }
            }
        }
        for c in &plan.values {
            let Some(n) = &c.new_name else { continue };
            if let Some((_, other, _)) = self.find_value(c.key, n)? {
                if other != c.vk {
                    return Err(refuse(
                        &self.key_path(c.key)?,
                        format!(
                            "the SID rewrite would rename a value to {:?}, the name of another value of the key",
                            to_display(n)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_sid_plan(&mut self, old: &Sid, new: &Sid) -> Result<SidReport> {
        let plan = self.plan_sids(old, new)?;
        self.check_sid_renames(&plan)?;
        for (sk, sd, users) in &plan.descriptors {
            self.sk_replace(*sk, sd, users)?;
        }
        for c in &plan.values {
            let mut vk = c.vk;
            if let Some(n) = &c.new_name {
                vk = self.rename_value(c.key, c.pos, vk, n)?;
            }
            if let Some(d) = &c.new_data {
                self.replace_value_data(c.key, vk, c.value_type, d)?;
            }
        }
        for (k, _, n) in &plan.renames {
            self.rename_key_id(*k, &to_display(n))?;
        }
        if !plan.report.occurrences.is_empty() || plan.report.descriptor_slack > 0 {
            // Windows leaves old copies in free cells and cell slack.
            self.scrub_unused()?;
        }
        Ok(plan.report)
    }
}

#[derive(Debug, Default)]
struct SidPlan {
    report: SidReport,
    descriptors: Vec<(u32, Vec<u8>, Vec<KeyId>)>,
    values: Vec<ValueChange>,
    /// Key, its path before, its new name.
    renames: Vec<(KeyId, String, Vec<u16>)>,
}

#[derive(Debug)]
struct ValueChange {
    key: KeyId,
    pos: usize,
    vk: u32,
    value_type: u32,
    new_name: Option<Vec<u16>>,
    new_data: Option<Vec<u8>>,
}
