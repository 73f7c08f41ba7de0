use proptest::prelude::*;
use uuid::Uuid;

use super::*;

fn body<'a>(position: u64, stream: &'a str, kind: &'a str, payload: &'a [u8]) -> RecordBody<'a> {
    RecordBody {
        position,
        stream,
        seq: 3,
        id: EventId::new(),
        kind,
        timestamp: Timestamp::from_micros(42),
        causation_id: Some(EventId::new()),
        correlation_id: None,
        batch_end: position,
        sealed: false,
        payload,
    }
}

#[test]
fn event_round_trips_and_chains() {
    let b = body(9, "s", "k", b"payload");
    let mut out = Vec::new();
    let chain = encode_event(&b, &GENESIS, &mut out).unwrap();
    let decoded = decode_record(9, &out).unwrap();
    assert_eq!(decoded.chain(), &chain);
    assert_eq!(chain, link(&GENESIS, &decoded.digest()));
    match decoded {
        StoredRecord::Event { body: d, .. } => assert_eq!(d, b),
        StoredRecord::Pruned { .. } => panic!("expected an event"),
    }
}

#[test]
fn pruned_stub_keeps_chain_and_digest() {
    let b = body(1, "s", "k", b"x");
    let mut out = Vec::new();
    let chain = encode_event(&b, &GENESIS, &mut out).unwrap();
    let digest = decode_record(1, &out).unwrap().digest();
    let stub = encode_pruned(&chain, &digest);
    let decoded = decode_record(1, &stub).unwrap();
    assert!(matches!(decoded, StoredRecord::Pruned { .. }));
    assert_eq!(decoded.chain(), &chain);
    assert_eq!(decoded.digest(), digest);
}

#[test]
fn every_single_byte_flip_is_detected() {
    let b = body(5, "stream", "kind", b"some payload bytes");
    let mut out = Vec::new();
    encode_event(&b, &GENESIS, &mut out).unwrap();
    for i in 0..out.len() {
        let mut bad = out.clone();
        bad[i] ^= 0x01;
        assert!(
            decode_record(5, &bad).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
}

#[test]
fn wrong_position_and_truncation_are_corrupt() {
    let b = body(5, "s", "k", b"p");
    let mut out = Vec::new();
    encode_event(&b, &GENESIS, &mut out).unwrap();
    assert!(matches!(
        decode_record(6, &out),
        Err(Error::Corrupt { position: 6, .. })
    ));
    for len in 0..out.len() {
        assert!(
            decode_record(5, &out[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
}

#[test]
fn unknown_version_is_reported_as_such() {
    let b = body(1, "s", "k", b"p");
    let mut out = Vec::new();
    encode_event(&b, &GENESIS, &mut out).unwrap();
    out[0] = 99;
    assert!(matches!(
        decode_record(1, &out),
        Err(Error::UnsupportedFormat { found: 99, .. })
    ));
}

#[test]
fn stream_keys_do_not_prefix_each_other() {
    let a = keys::stream_prefix("a");
    let a1 = keys::stream_index("a1", 1);
    assert!(!a1.starts_with(&a), "stream a's scan would see stream a1");
    assert_eq!(keys::index_last_seq(&keys::stream_index("a", 77)), Some(77));
    assert!(keys::prefix_end(&a) > keys::stream_index("a", u64::MAX));
}

#[test]
fn snapshot_round_trips_and_rejects_damage() {
    let b = SnapshotBody {
        stream: "s",
        seq: 4,
        timestamp: Timestamp::from_micros(1),
        sealed: false,
        state: b"state",
    };
    let out = encode_snapshot(&b).unwrap();
    assert_eq!(decode_snapshot("s", &out).unwrap(), b);
    assert!(decode_snapshot("other", &out).is_err());
    let mut bad = out.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(decode_snapshot("s", &bad).is_err());
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

proptest! {
    #[test]
    fn any_body_round_trips(
        position in any::<u64>(),
        stream in "\\PC{1,40}",
        seq in any::<u64>(),
        id in arb_uuid(),
        kind in "\\PC{0,40}",
        ts in any::<u64>(),
        causation in proptest::option::of(arb_uuid()),
        correlation in proptest::option::of(arb_uuid()),
        sealed in any::<bool>(),
        batch_end in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        previous in any::<[u8; 32]>(),
    ) {
        let b = RecordBody {
            position, stream: &stream, seq, id: EventId::from_uuid(id), kind: &kind,
            timestamp: Timestamp::from_micros(ts),
            causation_id: causation.map(EventId::from_uuid), correlation_id: correlation,
            batch_end, sealed, payload: &payload,
        };
        let mut out = Vec::new();
        let chain = encode_event(&b, &previous, &mut out).unwrap();
        let decoded = decode_record(position, &out).unwrap();
        prop_assert_eq!(decoded.chain(), &chain);
        prop_assert_eq!(link(&previous, &decoded.digest()), chain);
        match decoded {
            StoredRecord::Event { body: d, .. } => prop_assert_eq!(d, b),
            StoredRecord::Pruned { .. } => prop_assert!(false, "decoded as pruned"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(position in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(position, &bytes);
        let _ = decode_snapshot("s", &bytes);
        let _ = crate::index::decode_runs("s", &bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        // A valid version, kind and CRC so the postcard decoder itself is exercised.
        let mut value = vec![FORMAT_VERSION, KIND_EVENT, 0, 0, 0, 0];
        value.extend_from_slice(&[0; 32]);
        value.extend_from_slice(&tail);
        let crc = crc32fast::hash(&value[CHAIN_AT..]);
        value[CRC_AT..CHAIN_AT].copy_from_slice(&crc.to_le_bytes());
        let _ = decode_record(1, &value);
    }
}
