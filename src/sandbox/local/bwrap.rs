//! The bubblewrap command line of a local job: a new root holding only what the job needs. The
//! job's workspace read-write; a private `/tmp` and `/dev/shm`; `/dev` and `/proc` of its own (its
//! own pid namespace: pipe and every other host process are invisible); the system directories
//! read-only as the host has them (`/usr`, and `/bin`, `/lib*`, `/sbin` as symlinks or binds);
//! of `/etc` only the files programs read to run (never `/etc/shadow`; resolver configuration
//! and certificates only with network); the job's venv and the
//! Python it links to, read-only. Nothing else of the host: not the project, its rounds, home
//! directories or the host's `/tmp`. Its own network (none), IPC, UTS and cgroup namespaces and
//! session; it dies with pipe. When pipe is root the job drops to `nobody` (`setpriv`, after
//! bubblewrap has built the root), otherwise bubblewrap runs it unprivileged; either way with no
//! capability left.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Top-level system directories, bound read-only (or recreated as the symlinks they are).
const SYSTEM: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// What of `/etc` a program may need: the dynamic loader's cache, users and groups, `localhost`,
/// the time zone, Debian's alternatives (`awk`, `editor`). Each is a mount, which costs: the list
/// is short.
const ETC: [&str; 7] = [
    "ld.so.cache",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "localtime",
    "alternatives",
];

/// And with network: name resolution and certificates.
const ETC_NETWORK: [&str; 8] = [
    "resolv.conf",
    "host.conf",
    "gai.conf",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
];

/// Size of the private `/tmp` and `/dev/shm` (each a tmpfs, in memory).
const TMPFS_BYTES: u64 = 64 << 20;

/// Where `setpriv` is looked for (util-linux).
const SETPRIV: [&str; 4] = [
    "/usr/bin/setpriv",
    "/usr/sbin/setpriv",
    "/bin/setpriv",
    "/sbin/setpriv",
];

/// `setpriv` on this host.
pub fn setpriv() -> Option<PathBuf> {
    SETPRIV.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// What a job's bubblewrap needs to know.
#[derive(Debug, Clone)]
pub struct Mounts<'a> {
    /// `$PIPE_WORK`, bound read-write at the same path.
    pub work: &'a Path,
    /// Host directories bound read-only at the same path (the venv, Python's prefix).
    pub expose: &'a [PathBuf],
    /// Keep the host's network.
    pub network: bool,
    /// The directory of a build's model-gateway socket, bound read-only at
    /// [`crate::sandbox::GATEWAY_DIR`].
    pub gateway: Option<&'a Path>,
    /// Drop to this uid and gid (pipe is root) with `setpriv`, found at this path.
    pub user: Option<(u32, u32, &'a Path)>,
    /// The directory the command starts in.
    pub cwd: &'a Path,
}

/// The arguments of `bwrap`, up to and including the command that runs `sh -c script`.
pub fn args(m: &Mounts<'_>, script: &str) -> Vec<OsString> {
    args_in(Path::new("/"), m, script)
}

fn strs(a: &mut Vec<OsString>, items: &[&str]) {
    a.extend(items.iter().map(OsString::from));
}

/// Makes the directories above `path` (those not made yet, `made`) in the new root, 0755.
fn dirs_to(a: &mut Vec<OsString>, made: &mut Vec<PathBuf>, path: &Path) {
    let mut above: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|d| d.parent().is_some())
        .collect();
    above.reverse();
    for dir in above {
        if !made.iter().any(|m| m == dir) {
            made.push(dir.to_path_buf());
            strs(a, &["--perms", "0755", "--dir"]);
            a.push(dir.into());
        }
    }
}

/// [`args`] for a host whose root is `root` (a test lays out a fake one).
fn args_in(root: &Path, m: &Mounts<'_>, script: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    strs(
        &mut a,
        &[
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "pipe-sandbox",
            "--die-with-parent",
            "--new-session",
        ],
    );
    if !m.network {
        strs(&mut a, &["--unshare-net"]);
    }
    for dir in SYSTEM {
        let host = root.join(dir);
        let dest = format!("/{dir}");
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    a.push("--symlink".into());
                    a.push(target.into());
                    a.push(dest.into());
                }
            }
            Ok(meta) if meta.is_dir() => {
                a.push("--ro-bind".into());
                a.push(host.into());
                a.push(dest.into());
            }
            _ => {}
        }
    }
    // Bubblewrap would make the directories leading to a mount with no access for others
    // (`/etc` itself among them): each is made first, open to the job's user.
    let mut made: Vec<PathBuf> = Vec::new();
    let network: &[&str] = if m.network { &ETC_NETWORK } else { &[] };
    for file in ETC.iter().chain(network) {
        let dest = Path::new("/etc").join(file);
        dirs_to(&mut a, &mut made, &dest);
        a.push("--ro-bind-try".into());
        a.push(root.join("etc").join(file).into());
        a.push(dest.into());
    }
    let tmpfs = TMPFS_BYTES.to_string();
    strs(&mut a, &["--dev", "/dev", "--proc", "/proc"]);
    strs(
        &mut a,
        &["--perms", "1777", "--size", &tmpfs, "--tmpfs", "/tmp"],
    );
    strs(
        &mut a,
        &["--perms", "1777", "--size", &tmpfs, "--tmpfs", "/dev/shm"],
    );
    // After the tmpfs mounts: a venv or workspace under the host's /tmp appears inside the
    // private one, alone.
    for p in m.expose.iter().map(PathBuf::as_path).chain([m.work]) {
        dirs_to(&mut a, &mut made, p);
    }
    for p in m.expose {
        a.push("--ro-bind".into());
        a.push(p.into());
        a.push(p.into());
    }
    if let Some(dir) = m.gateway {
        dirs_to(&mut a, &mut made, Path::new(crate::sandbox::GATEWAY_DIR));
        a.push("--ro-bind".into());
        a.push(dir.into());
        a.push(crate::sandbox::GATEWAY_DIR.into());
    }
    a.push("--bind".into());
    a.push(m.work.into());
    a.push(m.work.into());
    a.push("--chdir".into());
    a.push(m.cwd.into());
    match m.user {
        Some((uid, gid, setpriv)) => {
            a.push("--".into());
            a.push(setpriv.into());
            a.push(format!("--reuid={uid}").into());
            a.push(format!("--regid={gid}").into());
            strs(
                &mut a,
                &[
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                    "--no-new-privs",
                    "--",
                ],
            );
        }
        None => {
            strs(&mut a, &["--cap-drop", "ALL", "--"]);
        }
    }
    a.push("sh".into());
    a.push("-c".into());
    a.push(script.into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn only_the_system_the_etc_files_the_venv_and_the_workspace_are_mounted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.path().join("lib64")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let r = root.path().display().to_string();
        let venv = PathBuf::from("/cache/venvs/abc");
        let work = Path::new("/tmp/pipe-sandbox-x/work");
        let m = Mounts {
            work,
            expose: std::slice::from_ref(&venv),
            gateway: None,
            network: false,
            user: None,
            cwd: &work.join("scratch"),
        };
        let a = text(&args_in(root.path(), &m, "echo hi"));
        assert!(a.contains(&format!("--ro-bind {r}/usr /usr ")), "{a}");
        assert!(a.contains("--symlink usr/bin /bin "), "{a}");
        assert!(a.contains(&format!("--ro-bind {r}/lib64 /lib64 ")), "{a}");
        assert!(!a.contains("/sbin"), "absent on this host: {a}");
        assert!(a.contains(&format!("--ro-bind-try {r}/etc/passwd /etc/passwd ")));
        assert!(
            a.find("--perms 0755 --dir /etc ").unwrap() < a.find("/etc/passwd").unwrap(),
            "{a}"
        );
        assert_eq!(a.matches("--dir /etc ").count(), 1, "{a}");
        assert!(!a.contains("shadow"), "{a}");
        assert!(!a.contains("resolv.conf"), "offline: {a}");
        assert!(
            !a.contains(&format!("{r}/etc /etc")),
            "never the whole /etc: {a}"
        );
        assert!(!a.contains(" / /"), "never the host's root: {a}");
        assert!(a.contains("--unshare-net"));
        assert!(a.contains("--new-session") && a.contains("--die-with-parent"));
        assert!(a.ends_with(&format!(
            "--perms 0755 --dir /cache --perms 0755 --dir /cache/venvs --perms 0755 --dir /tmp --perms 0755 --dir /tmp/pipe-sandbox-x \
             --ro-bind /cache/venvs/abc /cache/venvs/abc --bind {w} {w} --chdir {w}/scratch --cap-drop ALL -- sh -c echo hi",
            w = work.display()
        )), "{a}");
        // The tmpfs /tmp comes before the workspace bound under it.
        assert!(a.find("--tmpfs /tmp").unwrap() < a.find("--bind /tmp").unwrap());

        let setpriv = Path::new("/usr/bin/setpriv");
        let as_nobody = Mounts {
            network: true,
            user: Some((65534, 65534, setpriv)),
            ..m
        };
        let a = text(&args_in(root.path(), &as_nobody, "echo hi"));
        assert!(!a.contains("--unshare-net"), "{a}");
        assert!(a.contains("/etc/resolv.conf /etc/resolv.conf"), "{a}");
        assert!(a.ends_with(
            "-- /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- sh -c echo hi"
        ), "{a}");
    }
}
