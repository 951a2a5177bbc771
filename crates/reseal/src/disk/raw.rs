//! Raw disk images: the file's bytes are the disk's bytes.

use super::{Access, BlockDevice, ImageFile, check_range};
use crate::Result;
use std::path::Path;

/// A raw image file. Its size is the file's size when opened; writes past
/// it are refused.
#[derive(Debug)]
pub struct RawDisk {
    file: ImageFile,
    len: u64,
}

impl RawDisk {
    /// Opens a raw image.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        let file = ImageFile::open(path, access)?;
        let len = file.len()?;
        Ok(RawDisk { file, len })
    }
}

impl BlockDevice for RawDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.file.path, self.len, offset, buf.len())?;
        self.file.read(offset, buf, "raw data")
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(&self.file.path, self.len, offset, buf.len())?;
        self.file.write(offset, buf)
    }
    fn flush(&mut self) -> Result<()> {
        self.file.sync()
    }
}
