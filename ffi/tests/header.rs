//! The committed `include/conduit.h` is what cbindgen generates from the
//! sources. To update it after changing the API:
//! `CONDUIT_BLESS=1 cargo test -p conduit-ffi --test header`.

use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml is readable and valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");

    let path = dir.join("include/conduit.h");
    if std::env::var_os("CONDUIT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("include/conduit.h is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "ffi/include/conduit.h is out of date (first difference at line {}).\n\
             Regenerate it with:\n    CONDUIT_BLESS=1 cargo test -p conduit-ffi --test header\n\
             then review and commit the new header.",
            first_difference + 1
        );
    }
}
