//! Tests of the holder protocol: frames both ways, the decoder, versions, spec and status.

use super::*;

fn info() -> HolderInfo {
    HolderInfo {
        version: 1,
        holder: "kaged 0.1.0".into(),
        id: "s1".into(),
        run_name: "00112233aabbccdd".into(),
        holder_pid: 10,
        pid: 11,
        started_at_ms: 5,
        written: 1234,
        dropped: Some((10, 20)),
        rows: 24,
        cols: 80,
        state: HeldState::Running,
        egress_dir: Some("/tmp/kaged-egress-0011223344556677".into()),
        egress_allow: vec!["127.0.0.1:8080".into(), "*.example.com:443".into()],
        exit: None,
        kind: "pipes".into(),
        note: Some("{\"recorded\":7}".into()),
    }
}

fn status() -> StatusFile {
    StatusFile {
        v: 1,
        id: "s1".into(),
        exit: Some(ExitStatus {
            code: 137,
            signal: Some(9),
        }),
        killed_by: Some("operator".into()),
        started_at_ms: 1,
        ended_at_ms: 2,
        output_bytes: 3,
        dropped: None,
        holder_version: "kaged 0.1.0".into(),
        error: None,
    }
}

#[test]
fn every_frame_round_trips_through_the_decoder_byte_by_byte() {
    let to_holder = [
        ToHolder::Hello(ClientHello {
            versions: vec![1, 2],
            client: "kaged 0.1.0".into(),
        }),
        ToHolder::Attach { from: 42 },
        ToHolder::Input(b"ls\r".to_vec()),
        ToHolder::Resize {
            rows: 40,
            cols: 120,
        },
        ToHolder::Signal {
            sig: SignalName::TERM,
        },
        ToHolder::Kill { by: "alice".into() },
        ToHolder::Detach,
        ToHolder::AckExit,
        ToHolder::Note("{\"recorded\":12}".into()),
    ];
    let mut d = Decoder::new();
    for f in &to_holder {
        for b in f.encode() {
            assert_eq!(d.next_to_holder(), Step::Incomplete);
            d.push(&[b]);
        }
        assert_eq!(d.next_to_holder(), Step::Frame(f.clone()));
    }
    assert_eq!(d.buffered(), 0);
    let to_client = [
        ToClient::Hello(HolderHello::Accepted(Box::new(info()))),
        ToClient::Hello(HolderHello::Refused {
            refused: "no".into(),
            versions: vec![1],
        }),
        ToClient::Output {
            offset: u64::MAX - 3,
            bytes: vec![0, 1, 2, 255],
        },
        ToClient::Eof {
            written: 9,
            dropped: Some((1, 2)),
        },
        ToClient::Limit { by: "wall".into() },
        ToClient::Exit(status()),
        ToClient::Done { n: 3 },
        ToClient::Error {
            code: "x".into(),
            message: "y".into(),
        },
    ];
    let stream: Vec<u8> = to_client.iter().flat_map(ToClient::encode).collect();
    let mut d = Decoder::new();
    d.push(&stream);
    for f in &to_client {
        assert_eq!(d.next_to_client(), Step::Frame(f.clone()));
    }
    assert_eq!(d.next_to_client(), Step::Incomplete);
}

#[test]
fn the_frozen_frames_keep_their_bytes() {
    assert_eq!(
        ToHolder::Kill { by: "x".into() }.encode(),
        b"\x21\x00\x00\x00\x0a{\"by\":\"x\"}"
    );
    assert_eq!(ToHolder::Detach.encode(), b"\x22\x00\x00\x00\x00");
    assert_eq!(
        ToHolder::Signal {
            sig: SignalName::HUP
        }
        .encode(),
        b"\x20\x00\x00\x00\x0d{\"sig\":\"HUP\"}"
    );
    assert_eq!(
        ToClient::Done { n: 2 }.encode(),
        b"\x05\x00\x00\x00\x07{\"n\":2}"
    );
}

#[test]
fn bad_frames_are_consumed_and_oversized_ones_break_the_stream() {
    let mut d = Decoder::new();
    d.push(&encode(0x42, b"zz"));
    d.push(&encode(kind::ATTACH, b"{\"from\":-1}"));
    d.push(&encode(kind::DETACH, b"x"));
    d.push(&ToHolder::Detach.encode());
    assert_eq!(
        d.next_to_holder(),
        Step::Error(HolderFrameError::UnknownType(0x42))
    );
    assert!(matches!(
        d.next_to_holder(),
        Step::Error(HolderFrameError::Bad { kind: 0x10, .. })
    ));
    assert!(matches!(
        d.next_to_holder(),
        Step::Error(HolderFrameError::Bad { kind: 0x22, .. })
    ));
    assert_eq!(d.next_to_holder(), Step::Frame(ToHolder::Detach));
    let mut header = vec![kind::INPUT];
    header.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
    d.push(&header);
    let e = HolderFrameError::TooLarge {
        len: MAX_PAYLOAD as u64 + 1,
    };
    assert!(e.is_fatal());
    assert_eq!(d.next_to_holder(), Step::Error(e.clone()));
    d.push(&ToHolder::Detach.encode());
    assert_eq!(d.next_to_holder(), Step::Error(e));
    // A payload of exactly the limit is fine.
    let mut d = Decoder::new();
    d.push(&encode(kind::INPUT, &vec![7; MAX_PAYLOAD]));
    assert!(
        matches!(d.next_to_holder(), Step::Frame(ToHolder::Input(b)) if b.len() == MAX_PAYLOAD)
    );
}

#[test]
fn versions_are_negotiated_and_refusals_name_ours() {
    assert_eq!(negotiate(&[1], SUPPORTED), Ok(1));
    assert_eq!(negotiate(&[0, 1, 2], &[1, 2]), Ok(2));
    let refused = negotiate(&[99], SUPPORTED).unwrap_err();
    let HolderHello::Refused { versions, refused } = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(versions, &vec![PROTOCOL]);
    assert!(refused.contains("[99]"), "{refused}");
    assert!(negotiate(&[], SUPPORTED).is_err());
}

#[test]
fn a_newer_holder_hello_still_parses() {
    let mut value = serde_json::to_value(info()).unwrap();
    value["state"] = "paused".into();
    value["future_field"] = 1.into();
    let frame = encode(kind::HELLO, &serde_json::to_vec(&value).unwrap());
    let (k, p, _) = split(&frame).unwrap().unwrap();
    let ToClient::Hello(HolderHello::Accepted(got)) = ToClient::parse(k, p).unwrap() else {
        panic!("not accepted");
    };
    assert_eq!(got.state, HeldState::Unknown);
}

/// A holder from before `egress_allow` (the Hello of docs/holder-protocol.md, byte for byte)
/// still parses: its run had no allowlist to report, which a daemon taking it up reads as "not
/// known" (an allowlisted run of such a holder cannot have its proxy served again).
#[test]
fn an_older_holder_hello_without_egress_allow_still_parses() {
    let older = br#"{"version":1,"holder":"kaged 0.1.0","id":"s1","run_name":"00112233aabbccdd","holder_pid":1,"pid":2,"started_at_ms":0,"written":1234,"dropped":null,"rows":24,"cols":80,"state":"running","egress_dir":"/tmp/kaged-egress-0011223344556677","exit":null}"#;
    let frame = encode(kind::HELLO, older);
    let (k, p, _) = split(&frame).unwrap().unwrap();
    let ToClient::Hello(HolderHello::Accepted(got)) = ToClient::parse(k, p).unwrap() else {
        panic!("not accepted");
    };
    assert_eq!(got.written, 1234);
    assert_eq!(
        got.egress_dir.as_deref(),
        Some("/tmp/kaged-egress-0011223344556677")
    );
    assert!(got.egress_allow.is_empty());
    // And a newer one's allowlist goes through the frame both ways.
    let frame = ToClient::Hello(HolderHello::Accepted(Box::new(info()))).encode();
    let (k, p, _) = split(&frame).unwrap().unwrap();
    let ToClient::Hello(HolderHello::Accepted(got)) = ToClient::parse(k, p).unwrap() else {
        panic!("not accepted");
    };
    assert_eq!(got.egress_allow, info().egress_allow);
}

/// A spec from a daemon before `egress_allow` still parses, with no allowlist.
#[test]
fn an_older_spec_without_egress_allow_still_parses() {
    let older = r#"{"v":1,"id":"s1","run_name":"00112233aabbccdd","kind":"pty","socket":"/s","transcript_head":"/h/s1.out","cap":{"head":1,"tail":1,"segment":1},"status_path":"/h/s1.status","argv":["sh"],"rows":24,"cols":80,"kill_grace_ms":3000,"egress_dir":"/tmp/kaged-egress-0011223344556677"}"#;
    let spec: HolderSpec = serde_json::from_str(older).unwrap();
    assert!(spec.egress_allow.is_empty());
    assert!(spec.egress_dir.is_some());
}

#[test]
fn spec_and_status_files_round_trip() {
    let spec = HolderSpec {
        v: 1,
        id: "s1".into(),
        run_name: "00112233aabbccdd".into(),
        kind: "pty".into(),
        stderr_path: None,
        socket: "/run/kaged/holders/00112233aabbccdd.sock".into(),
        transcript_head: "/h/transcripts/s1.out".into(),
        cap: Cap::of(1 << 20),
        status_path: "/h/transcripts/s1.status".into(),
        argv: vec!["sh".into()],
        prefix: vec![],
        rlimits: vec!["--as=1".into()],
        cgroup_procs: vec![],
        cgroup_dirs: vec!["/sys/fs/cgroup/pids/kaged-x".into()],
        cwd: Some("/tmp".into()),
        env: vec![("A".into(), "b".into())],
        run_as: Some(RunAs { uid: 1, gid: 2 }),
        cage_fd_count: 4,
        rows: 24,
        cols: 80,
        deadline_ms: Some(9),
        wall_time_secs: Some(1),
        watchdog_pids: None,
        kill_grace_ms: 3000,
        egress_dir: Some("/tmp/kaged-egress-0011223344556677".into()),
        egress_allow: vec!["127.0.0.1:8080".into()],
        daemon_version: "kaged 0.1.0".into(),
    };
    let text = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<HolderSpec>(&text).unwrap(), spec);
    let s = status();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<StatusFile>(&text).unwrap(), s);
    // Fields only ever get added: an older reader ignores a newer one's.
    let newer = text.replacen('{', "{\"later\":true,", 1);
    assert_eq!(serde_json::from_str::<StatusFile>(&newer).unwrap(), s);
}

#[test]
fn a_note_is_bounded_text_and_an_older_holders_hello_reads_as_a_terminal_without_one() {
    let too_long = encode(kind::NOTE, &vec![b'x'; MAX_NOTE + 1]);
    let mut d = Decoder::new();
    d.push(&too_long);
    assert!(matches!(
        d.next_to_holder(),
        Step::Error(HolderFrameError::Bad {
            kind: kind::NOTE,
            ..
        })
    ));
    let mut d = Decoder::new();
    d.push(&encode(kind::NOTE, &[0xff, 0xfe]));
    assert!(matches!(
        d.next_to_holder(),
        Step::Error(HolderFrameError::Bad { .. })
    ));
    let mut older = serde_json::to_value(info()).unwrap();
    let fields = older.as_object_mut().unwrap();
    fields.remove("kind");
    fields.remove("note");
    let read: HolderInfo = serde_json::from_value(older).unwrap();
    assert_eq!((read.kind.as_str(), read.note), ("pty", None));
}
