//! A directory held open and read through names relative to it. Checking a node's outputs this
//! way walks one or two path components per file instead of the whole path from the working
//! directory each time: on a fully cached run of 10,000 nodes, path lookup was the largest cost.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An open directory.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
}

/// What a file is, as `lstat` tells (a symlink is `Other`, never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Other,
}

/// The parts of `lstat` the store compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub kind: Kind,
    pub len: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

fn c_name(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a name"))
}

impl DirHandle {
    pub fn open(path: &Path) -> io::Result<Self> {
        let name = c_name(path.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
        let fd = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `lstat` of a name relative to the directory.
    pub fn stat(&self, rel: &str) -> io::Result<FileStat> {
        let name = c_name(rel.as_bytes())?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the right type.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so it filled the buffer.
        let st = unsafe { st.assume_init() };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        };
        Ok(FileStat {
            kind,
            len: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            ctime_ns: st
                .st_ctime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec),
        })
    }

    /// The bytes of a regular file relative to the directory (a symlink as the last component
    /// is refused).
    pub fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let name = c_name(rel.as_bytes())?;
        // SAFETY: a valid descriptor and a NUL-terminated name; the result is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_reads_relative_names_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/a"), "hello").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("sub/a"), tmp.path().join("link")).unwrap();
        let d = DirHandle::open(tmp.path()).unwrap();
        let a = d.stat("sub/a").unwrap();
        assert_eq!((a.kind, a.len), (Kind::File, 5));
        assert_eq!(d.stat("sub").unwrap().kind, Kind::Dir);
        assert_eq!(d.stat("link").unwrap().kind, Kind::Other);
        assert_eq!(d.read("sub/a").unwrap(), b"hello");
        assert!(d.read("link").is_err());
        assert!(d.stat("missing").is_err());
        assert!(d.stat("a\0b").is_err());
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(tmp.path().join("sub/a")).unwrap();
        assert_eq!(a.mtime_ns, m.mtime() * 1_000_000_000 + m.mtime_nsec());
    }
}
