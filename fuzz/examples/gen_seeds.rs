//! Writes the `fuse_parse` seed corpus (valid INIT, READ, WRITE, IOCTL, POLL, INTERRUPT, ... requests) into `seeds/fuse_parse/`.
//!
//! Run from `fuzz/`: `cargo run --example gen_seeds`.

use std::fs;
use std::path::Path;

use sysgenid_abi::{SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS, encode_generation};
use sysgenid_fuse::parse;
use sysgenid_fuse::wire::{self, Wire};

/// A whole request: header with the right `len`, then `body`.
fn message(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
    let mut out = wire::InHeader {
        len: u32::try_from(wire::InHeader::SIZE + body.len()).unwrap(),
        opcode,
        unique,
        nodeid: wire::FUSE_ROOT_ID,
        uid: 1000,
        gid: 1000,
        pid: 4242,
        total_extlen: 0,
        padding: 0,
    }
    .to_bytes();
    out.extend_from_slice(body);
    out
}

fn main() {
    let mut init = wire::InitIn {
        major: 7,
        minor: 45,
        max_readahead: 131072,
        flags: (wire::FUSE_INIT_EXT | wire::FUSE_ATOMIC_O_TRUNC | wire::FUSE_MAX_PAGES) as u32,
    }
    .to_bytes();
    init.extend_from_slice(&((wire::FUSE_DIRECT_IO_ALLOW_MMAP >> 32) as u32).to_ne_bytes());
    init.resize(64, 0);

    let read = wire::ReadIn {
        fh: 1,
        size: 4096,
        read_flags: wire::FUSE_READ_LOCKOWNER,
        lock_owner: 7,
        ..Default::default()
    }
    .to_bytes();

    let ack = encode_generation(3);
    let mut write = wire::WriteIn {
        fh: 1,
        size: ack.len() as u32,
        ..Default::default()
    }
    .to_bytes();
    write.extend_from_slice(&ack);

    let ioctl = |cmd: u32, arg: u64| {
        wire::IoctlIn {
            fh: 1,
            cmd,
            arg,
            ..Default::default()
        }
        .to_bytes()
    };
    let poll = wire::PollIn {
        fh: 1,
        kh: 0x99,
        flags: wire::FUSE_POLL_SCHEDULE_NOTIFY,
        events: 1,
    }
    .to_bytes();
    let interrupt = wire::InterruptIn { unique: 5 }.to_bytes();
    let open = wire::OpenIn {
        flags: 2,
        open_flags: 0,
    }
    .to_bytes();

    let seeds: [(&str, Vec<u8>); 10] = [
        ("init", message(wire::FUSE_INIT, 1, &init)),
        ("lookup", message(wire::FUSE_LOOKUP, 2, b"sysgenid\0")),
        ("open", message(wire::FUSE_OPEN, 3, &open)),
        ("read", message(wire::FUSE_READ, 4, &read)),
        ("write", message(wire::FUSE_WRITE, 5, &write)),
        (
            "ioctl_wait",
            message(wire::FUSE_IOCTL, 6, &ioctl(SYSGENID_WAIT_WATCHERS, 100)),
        ),
        (
            "ioctl_trigger",
            message(wire::FUSE_IOCTL, 7, &ioctl(SYSGENID_TRIGGER_GEN_UPDATE, 9)),
        ),
        ("poll", message(wire::FUSE_POLL, 8, &poll)),
        ("interrupt", message(wire::FUSE_INTERRUPT, 9, &interrupt)),
        (
            "release",
            message(
                wire::FUSE_RELEASE,
                10,
                &wire::ReleaseIn {
                    fh: 1,
                    ..Default::default()
                }
                .to_bytes(),
            ),
        ),
    ];

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/fuse_parse");
    fs::create_dir_all(&dir).unwrap();
    let count = seeds.len();
    for (name, bytes) in seeds {
        parse(&bytes).unwrap_or_else(|e| panic!("seed {name} does not parse: {e}"));
        fs::write(dir.join(name), &bytes).unwrap();
    }
    println!("wrote {count} seeds to {}", dir.display());
}
