//! What kind of image a path holds, found by its content, not its name.
//!
//! A directory is a Windows root; a file is recognised by its magic
//! numbers and footers: `MSWIM` (WIM and ESD), then the disk containers
//! the block layer knows ([`crate::disk::detect_format`]: VHDX, VHD, and
//! the others it registers), and a raw disk only when its first sectors
//! look like one (an MBR or protective-MBR boot signature, a GPT header,
//! or an NTFS boot sector for a bare volume). Anything else is an error
//! that names what was found, so a mistyped path never reaches a backend
//! as "not a directory". [`ImageKind`] can also be forced (`--format`).
//!
//! ```
//! use reseal::image::{ImageKind, detect};
//! let dir = tempfile::tempdir().unwrap();
//! assert_eq!(detect(dir.path()).unwrap(), ImageKind::Directory);
//! let file = dir.path().join("notes.txt");
//! std::fs::write(&file, "hello").unwrap();
//! assert!(detect(&file).is_err());
//! ```

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::disk::{ImageFormat, detect_format};
use crate::{ResealError, Result};

/// The kind of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A directory holding a Windows root.
    Directory,
    /// A WIM or ESD file.
    Wim,
    /// A disk image of this container format.
    Disk(ImageFormat),
}

impl ImageKind {
    /// The name used by `--format` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Directory => "dir",
            ImageKind::Wim => "wim",
            ImageKind::Disk(f) => f.name(),
        }
    }

    /// Parses a `--format` name (`dir`, `wim`, or a disk format name such
    /// as `raw`, `vhd`, `vhdx`).
    pub fn from_name(name: &str) -> Option<ImageKind> {
        match name.to_ascii_lowercase().as_str() {
            "dir" | "directory" => Some(ImageKind::Directory),
            "wim" | "esd" => Some(ImageKind::Wim),
            n => ImageFormat::from_name(n).map(ImageKind::Disk),
        }
    }

    /// Every name [`from_name`](ImageKind::from_name) accepts, for help
    /// texts.
    pub fn names() -> Vec<&'static str> {
        let mut v = vec!["dir", "wim"];
        v.extend(ImageFormat::ALL.iter().map(|f| f.name()));
        v
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The WIM magic at offset 0 (WIM and ESD files, split parts too).
const WIM_MAGIC: &[u8; 8] = b"MSWIM\0\0\0";

fn bad(path: &Path, message: String) -> ResealError {
    ResealError::InvalidInput {
        what: path.display().to_string(),
        message,
    }
}

/// Finds the kind of the image at `path` from its content.
pub fn detect(path: &Path) -> Result<ImageKind> {
    let meta = std::fs::metadata(path).map_err(|e| ResealError::Io {
        path: path.to_path_buf(),
        action: "read the image's metadata",
        source: e,
    })?;
    if meta.is_dir() {
        return Ok(ImageKind::Directory);
    }
    if !meta.is_file() {
        return Err(bad(
            path,
            "is neither a regular file nor a directory (a device, FIFO or socket is not read as an image)".into(),
        ));
    }
    let mut head = vec![0u8; 4096];
    let mut f = File::open(path).map_err(|e| ResealError::Io {
        path: path.to_path_buf(),
        action: "open the image",
        source: e,
    })?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ResealError::Io {
                    path: path.to_path_buf(),
                    action: "read the image",
                    source: e,
                });
            }
        }
    }
    head.truncate(n);
    if head.starts_with(WIM_MAGIC) {
        return Ok(ImageKind::Wim);
    }
    let format = detect_format(path)?;
    if format != ImageFormat::Raw {
        return Ok(ImageKind::Disk(format));
    }
    if looks_like_raw_disk(&head) {
        return Ok(ImageKind::Disk(ImageFormat::Raw));
    }
    Err(bad(
        path,
        format!(
            "no supported image format recognised: found {} ({} bytes); expected a directory holding a Windows root, a WIM/ESD (\"MSWIM\"), a disk image ({}) or a raw disk whose first sector has an MBR, GPT or NTFS boot sector; give --format to force one",
            describe_bytes(&head),
            meta.len(),
            ImageFormat::ALL
                .iter()
                .filter(|f| **f != ImageFormat::Raw)
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Checks that `forced` (a `--format` choice) can apply to the image at
/// `path`, or detects the kind when nothing is forced. A forced disk
/// format must agree with a container recognised by content (a raw disk
/// may be forced on any file the block layer does not recognise).
pub fn resolve(path: &Path, forced: Option<ImageKind>) -> Result<ImageKind> {
    let Some(kind) = forced else {
        return detect(path);
    };
    let is_dir = path.is_dir();
    match kind {
        ImageKind::Directory if !is_dir => Err(bad(
            path,
            "--format dir: not a directory holding a Windows root".into(),
        )),
        ImageKind::Directory => Ok(kind),
        _ if is_dir => Err(bad(
            path,
            format!("--format {kind}: is a directory, not an image file"),
        )),
        ImageKind::Wim => Ok(kind),
        ImageKind::Disk(want) => {
            let found = detect_format(path)?;
            if found != want && found != ImageFormat::Raw {
                return Err(bad(
                    path,
                    format!(
                        "--format {kind}: the file's content says {}; leave --format out or give the right one",
                        found.name()
                    ),
                ));
            }
            if found == ImageFormat::Raw && want != ImageFormat::Raw {
                return Err(bad(
                    path,
                    format!("--format {kind}: no {kind} signature found in the file"),
                ));
            }
            Ok(kind)
        }
    }
}

/// An MBR/protective-MBR boot signature, a GPT header at LBA 1, or an NTFS
/// boot sector (a bare volume).
fn looks_like_raw_disk(head: &[u8]) -> bool {
    let mbr = head.get(510..512) == Some(&[0x55, 0xAA][..]);
    let gpt = head.get(512..520) == Some(&b"EFI PART"[..]);
    let ntfs = head.get(3..11) == Some(&b"NTFS    "[..]);
    mbr || gpt || ntfs
}

/// The first bytes of a file, for an error message: printable text in
/// quotes, else hex.
fn describe_bytes(head: &[u8]) -> String {
    if head.is_empty() {
        return "an empty file".into();
    }
    let first = &head[..head.len().min(16)];
    if first
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\n' || *b == b'\r' || *b == b'\t')
    {
        return format!("text starting {:?}", String::from_utf8_lossy(first));
    }
    let hex: Vec<String> = first.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_by_content() {
        let dir = tempfile::tempdir().expect("tmp");
        let wim = dir.path().join("image.img");
        let mut data = WIM_MAGIC.to_vec();
        data.resize(4096, 0);
        std::fs::write(&wim, &data).expect("write");
        assert_eq!(detect(&wim).expect("wim"), ImageKind::Wim);

        let raw = dir.path().join("disk.bin");
        let mut mbr = vec![0u8; 8192];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        std::fs::write(&raw, &mbr).expect("write");
        assert_eq!(
            detect(&raw).expect("raw"),
            ImageKind::Disk(ImageFormat::Raw)
        );

        let junk = dir.path().join("x.vhdx");
        std::fs::write(&junk, b"definitely not an image").expect("write");
        let e = detect(&junk).expect_err("junk").to_string();
        assert!(e.contains("no supported image format"), "{e}");
        assert!(e.contains("definitely not"), "{e}");
        assert!(resolve(&junk, Some(ImageKind::Disk(ImageFormat::Vhdx))).is_err());
        assert_eq!(
            resolve(&junk, Some(ImageKind::Disk(ImageFormat::Raw))).expect("forced raw"),
            ImageKind::Disk(ImageFormat::Raw)
        );
        assert!(resolve(dir.path(), Some(ImageKind::Wim)).is_err());
        assert!(resolve(&junk, Some(ImageKind::Directory)).is_err());
    }

    #[test]
    fn names_round_trip() {
        for n in ImageKind::names() {
            let k = ImageKind::from_name(n).expect(n);
            assert_eq!(k.name(), n);
        }
        assert!(ImageKind::from_name("zip").is_none());
    }

    #[test]
    fn fifo_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let fifo = dir.path().join("pipe");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if !reseal_testkit::require(ok, "mkfifo") {
            return;
        }
        let e = detect(&fifo).expect_err("fifo").to_string();
        assert!(e.contains("neither a regular file"), "{e}");
    }
}
