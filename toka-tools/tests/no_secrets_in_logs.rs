//! Minting, attenuating, parsing and checking tokens never log a signature: a logged
//! signature of a token (above all of a fresh, caveat-free one) is a bearer credential.

use std::sync::Mutex;

use toka_tools::{Authority, Caveat, Request};

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn token_operations_log_no_signature_bytes() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let authority = Authority::from_secret(b"root secret for the log test");
    let token = authority
        .mint([Caveat::Tool("fs.read".parse().unwrap())])
        .unwrap();
    let narrower = token.attenuate(&Caveat::Agent("alice".into()));
    let parsed: toka_tools::Capability = narrower.to_string().parse().unwrap();
    let request = Request {
        tool: "fs.read",
        agent: Some("alice"),
        path: None,
        bytes: None,
        now: jiff::Timestamp::now(),
        model: None,
    };
    authority.check(&parsed, &request).unwrap();
    // The signature is the last 32 bytes of the V2 binary of each token.
    use base64::Engine;
    let records = RECORDS.lock().unwrap().join("\n");
    for t in [&token, &narrower] {
        let binary = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.to_string())
            .unwrap();
        let signature = &binary[binary.len() - 32..];
        let as_debug = format!("{signature:?}");
        let inner = as_debug.trim_start_matches('[').trim_end_matches(']');
        assert!(
            !records.contains(inner),
            "a signature was logged:\n{records}"
        );
    }
}
