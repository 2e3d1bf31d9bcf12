//! Pre-shared key files of keyed UDP channels: the `key=PATH` URI option, or
//! [`KEY_ENV`] for every UDP channel of a process (the URI wins).
//!
//! # The file
//! Exactly 32 random bytes, in a regular file (a symbolic link to one is
//! followed) that neither group nor others may read or write. Make one with
//!
//! ```sh
//! head -c 32 /dev/urandom > conduit.key && chmod 600 conduit.key
//! ```
//!
//! and give both ends the same file (copy it over a secure channel). The
//! checks are made on the opened file, so the file checked is the file read.
//! The key is never printed: errors name the path and what is wrong, and
//! [`Psk`]'s `Debug` shows no bytes.
//!
//! # What a key protects
//! With a key, every datagram is encrypted and authenticated with
//! AES-256-GCM ([`crate::proto::crypto`]): without the key nobody can read
//! the stream, inject, alter or reorder data into it, take over or close the
//! session, or replay old datagrams (each direction keeps a sliding replay
//! window). Every session gets fresh keys derived from the key and both
//! ends' random setup nonces, so datagrams of one session mean nothing in
//! another. An end with a key and an end without one (or with another key)
//! do not talk: each counts the other's datagrams as dropped and reports
//! [`Error::KeyMismatch`].
//!
//! # What it does not
//! It does not hide traffic patterns (datagram sizes, timing, addresses and
//! ports), does not help once a host holding the key is compromised (anyone
//! who can read the file is a legitimate end), and does not stop a flood of
//! datagrams from using bandwidth and CPU (each forged datagram is dropped
//! after one tag check). There is no key rotation other than restarting
//! both ends with a new file.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::proto::crypto::KEY_LEN;
use crate::proto::Psk;
use crate::Error;

/// Environment variable naming the key file of every UDP channel in the
/// process that has no `key=` option.
pub const KEY_ENV: &str = "CONDUIT_UDP_KEY_FILE";

/// Permission bits that must be clear: read and write by group and others.
const GROUP_OTHER_RW: u32 = 0o066;

/// Reads and checks the key file at `path`.
///
/// # Errors
/// A sentence naming the path and what is wrong (it cannot be opened, is
/// not a regular file, is readable or writable by group or others, is not
/// exactly 32 bytes); never any key bytes.
pub fn read_key_file(path: &Path) -> Result<Psk, String> {
    let shown = path.display();
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is then
    // refused as not a regular file. No effect on a regular file.
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open key file {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("key file {shown} is not a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_RW != 0 {
        return Err(format!(
            "key file {shown} is readable or writable by group or others (mode {mode:04o}): \
             make it private with `chmod 600 {shown}`"
        ));
    }
    let wrong_size = |n: u64| {
        format!(
            "key file {shown} must hold exactly {KEY_LEN} bytes, it has {n}{}; make one with \
             `head -c 32 /dev/urandom > FILE && chmod 600 FILE`",
            if n > KEY_LEN as u64 { " or more" } else { "" }
        )
    };
    if meta.len() != KEY_LEN as u64 {
        return Err(wrong_size(meta.len()));
    }
    // Read at most one byte more than a key (the file may have changed
    // since the stat): nothing here grows with the file.
    let mut buf = [0u8; KEY_LEN + 1];
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read key file {shown}: {e}")),
        }
    }
    let key = if n == KEY_LEN {
        Psk::from_slice(&buf[..KEY_LEN])
    } else {
        None
    };
    buf = [0; KEY_LEN + 1];
    core::hint::black_box(&buf);
    key.ok_or_else(|| wrong_size(n as u64))
}

/// The key of a UDP channel: from the URI's `key=PATH` when given (an error
/// is then [`Error::InvalidUri`]), else from the file named by `env`, the
/// value of [`KEY_ENV`] (an error is then [`Error::InvalidArgument`] naming
/// the variable); `None` when neither is set (an empty variable is unset).
///
/// # Errors
/// The key file cannot be used (see [`read_key_file`]).
pub fn channel_key(
    uri: &crate::uri::ChannelUri,
    option: Option<&str>,
    env: Option<&OsStr>,
) -> Result<Option<Psk>, Error> {
    if let Some(path) = option {
        return read_key_file(Path::new(path))
            .map(Some)
            .map_err(|e| uri.invalid(format!("key={path}: {e}")));
    }
    match env {
        Some(path) if !path.is_empty() => read_key_file(Path::new(path))
            .map(Some)
            .map_err(|e| Error::InvalidArgument(format!("{KEY_ENV}: {e}"))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::UdpOptions;
    use crate::uri::ChannelUri;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh directory for one test's files, removed at the end.
    struct Dir(conduit_test_util::TempDir);

    impl Dir {
        fn new(tag: &str) -> Dir {
            Dir(conduit_test_util::TempDir::new(&format!("key-{tag}")))
        }

        fn file(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
    }

    const KEY: [u8; 32] = *b"0123456789abcdefghijklmnopqrstuv";

    fn err(p: &Path) -> String {
        let e = read_key_file(p).unwrap_err();
        assert!(!e.contains("0123456789"), "{e}");
        e
    }

    #[test]
    fn a_private_32_byte_file_is_a_key() {
        let d = Dir::new("ok");
        for mode in [0o600, 0o400, 0o700] {
            let p = d.file(&format!("k{mode:o}"), &KEY, mode);
            let k = read_key_file(&p).unwrap();
            assert_eq!(format!("{k:?}"), "Psk(..)");
        }
        // A link to a private key file is followed.
        let target = d.file("target", &KEY, 0o600);
        let link = d.0.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        read_key_file(&link).unwrap();
    }

    #[test]
    fn group_or_other_access_is_refused() {
        let d = Dir::new("mode");
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o666] {
            let p = d.file(&format!("k{mode:o}"), &KEY, mode);
            let e = err(&p);
            assert!(
                e.contains("readable or writable by group or others")
                    && e.contains(&format!("{mode:04o}"))
                    && e.contains("chmod 600"),
                "{e}"
            );
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let d = Dir::new("size");
        for len in [0, 1, 31, 33, 64, 4096] {
            let p = d.file(&format!("k{len}"), &vec![b'0'; len], 0o600);
            let e = err(&p);
            assert!(
                e.contains("exactly 32 bytes") && e.contains(&format!("has {len}")),
                "{e}"
            );
        }
    }

    #[test]
    fn other_file_kinds_and_missing_files_are_refused() {
        let d = Dir::new("kind");
        let e = err(d.0.path());
        assert!(e.contains("not a regular file"), "{e}");
        let e = err(&d.0.join("missing"));
        assert!(e.contains("cannot open key file"), "{e}");
        // A FIFO with no writer is refused at once, not waited on (std has no
        // mkfifo; the coreutils command keeps this test free of unsafe code).
        let fifo = d.0.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(read_key_file(&f).map(|_| ())));
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("opening a FIFO key file hung");
        let e = r.unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = err(Path::new("/dev/null"));
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn the_uri_option_wins_over_the_environment() {
        let d = Dir::new("env");
        let good = d.file("good", &KEY, 0o600);
        let open = d.file("open", &KEY, 0o644);
        let uri = |s: &str| ChannelUri::parse(s).unwrap();
        let u = uri("udp://127.0.0.1:1");
        let g = good.to_str().unwrap();
        let o = open.to_str().unwrap();
        assert!(channel_key(&u, None, None).unwrap().is_none());
        assert!(channel_key(&u, None, Some(OsStr::new("")))
            .unwrap()
            .is_none());
        assert!(channel_key(&u, Some(g), None).unwrap().is_some());
        assert!(channel_key(&u, None, Some(good.as_os_str()))
            .unwrap()
            .is_some());
        // The URI's file is used, the environment's (bad) one not even read.
        assert!(channel_key(&u, Some(g), Some(open.as_os_str()))
            .unwrap()
            .is_some());
        match channel_key(&u, Some(o), Some(good.as_os_str())) {
            Err(Error::InvalidUri { reason, .. }) => {
                assert!(reason.starts_with(&format!("key={o}")), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match channel_key(&u, None, Some(open.as_os_str())) {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with(KEY_ENV), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_key_option_keys_the_channel_and_is_never_printed() {
        let d = Dir::new("uri");
        let good = d.file("good", &KEY, 0o600);
        let open = d.file("open", &KEY, 0o644);
        let opts = |p: &Path| {
            UdpOptions::from_uri(
                ChannelUri::parse(&format!("udp://127.0.0.1:1?key={}", p.display())).unwrap(),
            )
        };
        let o = opts(&good).unwrap();
        assert!(o.proto.key.is_some());
        let shown = format!("{o:?}");
        assert!(
            shown.contains("Psk(..)") && !shown.contains("0123456789"),
            "{shown}"
        );
        let e = opts(&open).unwrap_err();
        assert!(matches!(e, Error::InvalidUri { .. }), "{e:?}");
        assert_eq!(e.code(), crate::code::INVALID_ARGUMENT);
        let shown = e.to_string();
        assert!(
            shown.contains("key=") && shown.contains("group or others"),
            "{shown}"
        );
        assert!(opts(&d.0.join("missing")).is_err());
    }
}
