//! Seed inputs for the fuzz targets of this crate (fuzz/fuzz_targets/{spdy_frame, spdy_headers,
//! websocket_channel}.rs), made with the crate's own encoders: what kubectl/crictl send. The test
//! checks that every seed decodes as meant; with `CRIUS_WRITE_FUZZ_SEEDS=1` it also writes them
//! to fuzz/corpus/<target>/.

use crate::spdy::frame::{FLAG_FIN, Frame};
use crate::spdy::headers::{Decoder, Encoder, HeaderError, Headers};
use crate::websocket::{ChannelDecoder, Input};

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
}

/// The fuzz crate's message framing: each message prefixed by its big-endian `u16` length.
fn join(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// A remote-command session's client frames: SYN_STREAMs for each stream (one header context),
/// stdin data with FIN, and the control frames a client may send.
fn exec_session() -> (Vec<Frame>, Vec<Headers>) {
    let mut enc = Encoder::default();
    let blocks: Vec<Headers> = ["error", "stdin", "stdout", "resize"]
        .iter()
        .map(|t| headers(&[("streamType", t)]))
        .collect();
    let mut frames: Vec<Frame> = blocks
        .iter()
        .enumerate()
        .map(|(i, h)| Frame::SynStream {
            stream_id: 2 * i as u32 + 1,
            assoc_id: 0,
            priority: 0,
            flags: 0,
            header_block: enc.encode(h),
        })
        .collect();
    frames.extend([
        Frame::Data {
            stream_id: 7,
            flags: 0,
            data: br#"{"Width":80,"Height":24}"#.to_vec(),
        },
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: b"echo hi\n".to_vec(),
        },
        Frame::Ping { id: 1 },
        Frame::Settings,
        Frame::WindowUpdate {
            stream_id: 5,
            delta: 65536,
        },
        Frame::RstStream {
            stream_id: 5,
            status: 5,
        },
        Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        },
    ]);
    (frames, blocks)
}

/// Port-forward's streams: error and data for one port, one header context.
fn portforward_blocks() -> Vec<Headers> {
    ["error", "data"]
        .iter()
        .map(|t| headers(&[("streamtype", t), ("port", "8080"), ("requestid", "0")]))
        .collect()
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (frames, blocks) = exec_session();
    let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    let mut enc = Encoder::default();
    let exec_blocks: Vec<Vec<u8>> = blocks.iter().map(|h| enc.encode(h)).collect();
    let mut enc = Encoder::default();
    let pf_blocks: Vec<Vec<u8>> = portforward_blocks().iter().map(|h| enc.encode(h)).collect();
    // 300 KiB of one value deflates to well under 1 KiB: a bomb the decoder must stop.
    let bomb = Encoder::default().encode(&headers(&[("x", &"a".repeat(300 << 10))]));
    let resize = |s: &str| [&[4u8][..], s.as_bytes()].concat();
    vec![
        ("spdy_frame", "exec-session", wire),
        ("spdy_headers", "exec-streams", join(&exec_blocks)),
        ("spdy_headers", "portforward-streams", join(&pf_blocks)),
        ("spdy_headers", "bomb", join(&[bomb])),
        (
            "websocket_channel",
            "v5-exec-tty",
            [
                vec![5],
                join(&[
                    resize(r#"{"Width":80,"Height":24}"#),
                    b"\0ls\n".to_vec(),
                    resize(r#"{"Width":100,"#),
                    resize(r#""Height":40}"#),
                    vec![255, 0],
                ]),
            ]
            .concat(),
        ),
        (
            "websocket_channel",
            "v4-attach",
            [
                vec![4],
                join(&[b"\0input".to_vec(), vec![255, 0], b"\0more".to_vec()]),
            ]
            .concat(),
        ),
    ]
}

#[test]
fn fuzz_seeds_decode_as_meant() {
    let (frames, blocks) = exec_session();
    let all = seeds();
    let (mut rest, mut parsed) = (&all[0].2[..], Vec::new());
    while let Some((f, used)) = Frame::parse(rest).unwrap() {
        parsed.push(f);
        rest = &rest[used..];
    }
    assert_eq!(parsed, frames);
    let mut dec = Decoder::default();
    for f in &parsed[..blocks.len()] {
        let Frame::SynStream { header_block, .. } = f else {
            panic!("{f:?}")
        };
        assert!(dec.decode(header_block).unwrap().get("streamtype").is_some());
    }
    let bomb = &all[3].2[2..];
    assert!(bomb.len() < 1024);
    assert!(matches!(
        Decoder::default().decode(bomb),
        Err(HeaderError::TooLarge(_))
    ));
    // v5: resizes across messages, stdin, then the close; v4 ignores the close.
    let mut v5 = ChannelDecoder::new(true);
    let got: Vec<String> = split(&all[4].2[1..])
        .iter()
        .map(|m| format!("{:?}", v5.decode(m).unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            "Resize([TermSize { width: 80, height: 24 }])",
            "Stdin([108, 115, 10])",
            "Resize([])",
            "Resize([TermSize { width: 100, height: 40 }])",
            "CloseStdin"
        ]
    );
    let mut v4 = ChannelDecoder::new(false);
    let msgs = split(&all[5].2[1..]);
    assert_eq!(v4.decode(&msgs[2]).unwrap(), Input::Stdin(b"more"));
    if std::env::var_os("CRIUS_WRITE_FUZZ_SEEDS").is_some() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, data) in &all {
            std::fs::create_dir_all(corpus.join(target)).unwrap();
            std::fs::write(corpus.join(target).join(name), data).unwrap();
        }
    }
}

fn split(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        out.push(data[2..2 + len].to_vec());
        data = &data[2 + len..];
    }
    out
}
