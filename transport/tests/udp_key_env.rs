//! `CONDUIT_UDP_KEY_FILE` keys every UDP channel of the process that has no
//! `key=` option. One test in its own binary: it sets the process's
//! environment, which no other thread reads meanwhile.

use std::os::unix::fs::PermissionsExt;

use conduit::udp::key_file::KEY_ENV;
use conduit::udp::UdpOptions;
use conduit::uri::ChannelUri;
use conduit::Error;

fn opts(uri: &str) -> Result<UdpOptions, Error> {
    UdpOptions::from_uri(ChannelUri::parse(uri)?)
}

#[test]
fn the_environment_keys_channels_and_the_uri_wins() {
    let dir = conduit_test_util::TempDir::new("key-env");
    let write = |name: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, [7u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let good = write("good", 0o600);
    let open = write("open", 0o640);

    std::env::remove_var(KEY_ENV);
    assert!(opts("udp://127.0.0.1:1").unwrap().proto.key.is_none());

    std::env::set_var(KEY_ENV, &good);
    assert!(opts("udp://127.0.0.1:1").unwrap().proto.key.is_some());

    std::env::set_var(KEY_ENV, &open);
    match opts("udp://127.0.0.1:1") {
        Err(Error::InvalidArgument(m)) => {
            assert!(
                m.starts_with(KEY_ENV) && m.contains("group or others"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The URI's key wins; the environment's file is not even checked.
    let o = opts(&format!("udp://127.0.0.1:1?key={}", good.display())).unwrap();
    assert!(o.proto.key.is_some());

    std::env::set_var(KEY_ENV, "");
    assert!(opts("udp://127.0.0.1:1").unwrap().proto.key.is_none());
    std::env::remove_var(KEY_ENV);
}
