//! The node credentials file (Docker's config.json): parsing and looking a host up never panic,
//! and what a lookup finds is named for the host asked about.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = crius_image::registry::auth_file::parse(data) else {
        return;
    };
    for host in ["docker.io", "quay.io", "127.0.0.1:5000", "reg.example"] {
        if let Ok(Some(c)) = file.lookup(host) {
            assert_eq!(c.server_address, host);
            c.to_auth().expect("a found entry's credentials were checked");
        }
    }
});
