use super::*;
use crate::SpawnSpec;

fn v1_spawn(spec: &SpawnSpec) -> v1::TreeRecord {
    v1::TreeRecord::Spawned {
        parent: None,
        kind: "k".into(),
        args: vec![7],
        spec: v1::SpawnSpec {
            id: spec.id.clone(),
            restart: v1::Restart::Permanent,
            durable: true,
            supervision: v1::SupervisorSpec {
                strategy: v1::Strategy::OneForOne,
                intensity: v1::Intensity {
                    max_restarts: 3,
                    within: std::time::Duration::from_secs(5),
                },
                backoff: None,
            },
            snapshot_every: None,
            max_attempts: None,
        },
    }
}

#[test]
fn format_1_tree_records_keep_their_encoding_and_read_as_format_2() {
    let spec = SpawnSpec::new("a").unwrap();
    let spawned = encode("", &v1_spawn(&spec)).unwrap();
    // The bytes format 1 wrote: variant 0, no parent, kind "k", args [7], the spec.
    assert_eq!(
        spawned,
        [0, 0, 1, b'k', 1, 7, 1, b'a', 0, 1, 0, 3, 5, 0, 0, 0, 0]
    );
    let stopped = encode("", &v1::TreeRecord::Stopped { ids: vec![] }).unwrap();
    assert_eq!(stopped, [1, 0]);
    let read = decode_tree("toka.spawn", 1, &spawned).unwrap();
    assert_eq!(
        read,
        TreeRecord::Spawned {
            parent: None,
            kind: "k".into(),
            args: vec![7],
            spec: StoredSpec::from(&spec),
            base: 0,
        }
    );
    assert_eq!(SpawnSpec::from(StoredSpec::from(&spec)), spec);
}

#[test]
fn format_2_encodings_are_pinned() {
    let spec = SpawnSpec::new("a").unwrap().max_attempts(2);
    let record = TreeRecord::Spawned {
        parent: None,
        kind: "k".into(),
        args: vec![7],
        spec: (&spec).into(),
        base: 4,
    };
    let bytes = encode("", &record).unwrap();
    assert_eq!(
        bytes,
        [
            0, 0, 1, b'k', 1, 7, 1, b'a', 0, 1, 0, 3, 5, 0, 0, 0, 1, 2, 4
        ],
        "changing a stored layout needs a new format (and a reader for this one)"
    );
    assert_eq!(
        decode_tree(RecordKind::Spawn.stored(), 1, &bytes).unwrap(),
        record
    );
    let reply = ReplyRecord {
        effect: EffectId { seq: 3, n: 1 },
        outcome: Outcome::InDoubt,
    };
    let bytes = encode("", &reply).unwrap();
    assert_eq!(bytes, [3, 1, 2]);
    assert_eq!(
        decode_reply(RecordKind::Result.stored(), "agent/a", 5, &bytes).unwrap(),
        reply
    );
}

#[test]
fn format_1_in_doubt_outcomes_read_as_the_enum() {
    let old = v1::ReplyRecord {
        effect: EffectId { seq: 3, n: 1 },
        body: Err(v1::IN_DOUBT.to_owned()),
    };
    let bytes = encode("", &old).unwrap();
    let read = decode_reply("toka.result", "agent/a", 5, &bytes).unwrap();
    assert_eq!(read.outcome, Outcome::InDoubt);
    let failed = v1::ReplyRecord {
        effect: EffectId { seq: 3, n: 2 },
        body: Err("boom".into()),
    };
    let bytes = encode("", &failed).unwrap();
    let read = decode_reply("toka.reply", "agent/a", 6, &bytes).unwrap();
    assert_eq!(read.outcome, Outcome::Failed("boom".into()));
}

#[test]
fn kinds_name_their_format_and_newer_formats_are_refused() {
    for kind in RecordKind::ALL {
        assert_eq!(
            RecordKind::parse(kind.stored(), "s", 1).unwrap(),
            Some((kind, FORMAT))
        );
        assert_eq!(kind.stored(), format!("{}@{FORMAT}", kind.name()));
    }
    assert_eq!(
        RecordKind::parse("toka.msg", "s", 1).unwrap(),
        Some((RecordKind::Msg, 1))
    );
    assert_eq!(RecordKind::parse("toka.steps", "s", 1).unwrap(), None);
    assert_eq!(RecordKind::parse("app.event", "s", 1).unwrap(), None);
    assert_eq!(RecordKind::parse("toka.revoked", "s", 1).unwrap(), None);
    assert_eq!(
        RecordKind::parse("toka.msg@2", "s", 1).unwrap(),
        Some((RecordKind::Msg, 2))
    );
    let error = RecordKind::parse("toka.msg@4", "agent/x", 9).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("format 4") && text.contains("formats 1 to 3") && text.contains("agent/x"),
        "{text}"
    );
    assert!(RecordKind::parse("toka.approval@7", "agent/x", 9).is_err());
}

#[test]
fn snapshots_carry_their_format_and_format_1_snapshots_still_read() {
    let snapshot = SnapshotRecord {
        user: vec![1, 2, 3],
        watermarks: vec![(AgentId::new("b").unwrap(), EffectId { seq: 4, n: 1 })],
        timers: vec![],
    };
    let v2 = encode_snapshot(&snapshot).unwrap();
    assert!(v2.starts_with(&SNAPSHOT_HEADER));
    assert_eq!(decode_snapshot("agent/a", 9, &v2).unwrap(), snapshot);
    let v1 = encode("", &snapshot).unwrap();
    assert_eq!(decode_snapshot("agent/a", 9, &v1).unwrap(), snapshot);
    // A format 1 snapshot cannot start with the header: as a length it overflows.
    assert!(postcard::from_bytes::<SnapshotRecord>(&v2).is_err());
    // Format 2 wrote the same layout under its own number: still read.
    let mut v2_written = v2.clone();
    v2_written[SNAPSHOT_HEADER.len()] = 2;
    assert_eq!(
        decode_snapshot("agent/a", 9, &v2_written).unwrap(),
        snapshot
    );
    let mut v4 = v2.clone();
    v4[SNAPSHOT_HEADER.len()] = 4;
    assert!(matches!(
        decode_snapshot("agent/a", 9, &v4),
        Err(Error::RecordFormat { found: 4, .. })
    ));
}

#[test]
fn garbage_records_are_errors_not_panics() {
    for bytes in [&b""[..], b"\xff\xff\xff\xff\xff\xff", b"\x01\x05ab"] {
        assert!(decode::<MsgRecord<'_>>("agent/x", 3, bytes).is_err());
        assert!(decode_msg(2, "agent/x", 3, bytes).is_err());
        assert!(decode_tree("toka.spawn@2", 3, bytes).is_err());
        assert!(decode_tree("toka.spawn", 3, bytes).is_err());
        assert!(decode_reply("toka.reply@2", "agent/x", 3, bytes).is_err());
        assert!(decode_snapshot("agent/x", 3, bytes).is_err());
    }
    let record = MsgRecord {
        origin: Origin::Timer(EffectId { seq: 2, n: 1 }),
        sent_micros: 7,
        topic: Some("t"),
        body: b"hi",
        trace: None,
    };
    let bytes = encode("a message", &record).unwrap();
    let back: MsgRecord<'_> = decode("agent/x", 1, &bytes).unwrap();
    assert_eq!(
        (back.origin, back.topic, back.body),
        (record.origin, Some("t"), &b"hi"[..])
    );
}

#[test]
fn format_3_messages_keep_their_trace_and_format_2_messages_still_read() {
    let trace = StoredTrace {
        trace_id: [0x4b; 16],
        span_id: [0xb7; 8],
        flags: 1,
    };
    let record = MsgRecord {
        origin: Origin::External,
        sent_micros: 7,
        topic: None,
        body: b"hi",
        trace: Some(trace),
    };
    let bytes = encode("a message", &record).unwrap();
    let mut pinned = vec![0, 7, 0, 2, b'h', b'i', 1];
    pinned.extend([0x4b; 16]);
    pinned.extend([0xb7; 8]);
    pinned.push(1);
    assert_eq!(
        bytes, pinned,
        "changing a stored layout needs a new format (and a reader for this one)"
    );
    let back = decode_msg(FORMAT, "agent/x", 1, &bytes).unwrap();
    assert_eq!(back.trace, Some(trace));
    assert_eq!(back.body, b"hi");
    let untraced = MsgRecord {
        trace: None,
        ..record
    };
    assert_eq!(
        encode("a message", &untraced).unwrap(),
        [0, 7, 0, 2, b'h', b'i', 0]
    );
    // What formats 1 and 2 wrote (no trace field) reads with no trace.
    let old = [0, 7, 1, 1, b't', 2, b'h', b'i'];
    for format in [1, 2] {
        let read = decode_msg(format, "agent/x", 1, &old).unwrap();
        assert_eq!(
            (read.topic, read.body, read.trace),
            (Some("t"), &b"hi"[..], None)
        );
    }
    assert_eq!(
        crate::TraceContext::from(trace).traceparent(),
        format!("00-{}-{}-01", "4b".repeat(16), "b7".repeat(8))
    );
}
