//! Fuzzes INIT negotiation: arbitrary kernel INIT values through the parser, `negotiate` and `reply::init`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sysgenid_fuse::init::MAX_WRITE_LIMIT;
use sysgenid_fuse::wire::{self, Wire};
use sysgenid_fuse::{InitWants, KernelInit, Negotiated, Operation, negotiate, parse, reply};

#[derive(Debug, Arbitrary)]
struct Input {
    unique: u64,
    major: u32,
    minor: u32,
    max_readahead: u32,
    flags: u32,
    flags2: u32,
    /// Bytes of body after `fuse_init_in` (newer kernels send 64 in all).
    extra: u8,
    max_write: u32,
    wants_readahead: Option<u32>,
    async_read: bool,
    direct_io_allow_mmap: bool,
    /// A second, unrelated set of agreed values for `reply::init` alone.
    raw: RawNegotiated,
}

#[derive(Debug, Arbitrary)]
struct RawNegotiated {
    kernel_minor: u32,
    minor: u32,
    flags: u64,
    max_write: u32,
    max_readahead: u32,
    max_pages: u16,
    direct_io_allow_mmap: bool,
}

fuzz_target!(|input: Input| {
    // Send the values the way the kernel does: an INIT message.
    let mut body = wire::InitIn {
        major: input.major,
        minor: input.minor,
        max_readahead: input.max_readahead,
        flags: input.flags,
    }
    .to_bytes();
    let mut tail = input.flags2.to_ne_bytes().to_vec();
    tail.resize(usize::from(input.extra % 49), 0);
    body.extend_from_slice(&tail);
    let mut msg = wire::InHeader {
        len: (wire::InHeader::SIZE + body.len()) as u32,
        opcode: wire::FUSE_INIT,
        unique: input.unique,
        nodeid: 0,
        ..Default::default()
    }
    .to_bytes();
    msg.extend_from_slice(&body);
    let request = parse(&msg).expect("a well-formed INIT parses");
    let Operation::Init(kernel) = request.op else {
        panic!("INIT parsed as {:?}", request.op);
    };
    let has_flags2 = u64::from(input.flags) & wire::FUSE_INIT_EXT != 0 && tail.len() >= 4;
    let want_flags = u64::from(input.flags)
        | if has_flags2 {
            u64::from(input.flags2) << 32
        } else {
            0
        };
    assert_eq!(
        kernel,
        KernelInit {
            major: input.major,
            minor: input.minor,
            max_readahead: input.max_readahead,
            flags: want_flags,
        }
    );

    let wants = InitWants {
        max_write: input.max_write,
        max_readahead: input.wants_readahead,
        async_read: input.async_read,
        direct_io_allow_mmap: input.direct_io_allow_mmap,
    };
    match negotiate(&kernel, &wants) {
        Ok(agreed) => {
            check_agreed(&kernel, &agreed);
            check_reply(request.header.unique, &agreed);
        }
        Err(e) => {
            assert!(
                kernel.major != wire::FUSE_KERNEL_VERSION
                    || kernel.minor < wire::MIN_KERNEL_MINOR_VERSION
            );
            let _ = e.to_string();
        }
    }

    let r = input.raw;
    check_reply(
        input.unique,
        &Negotiated {
            kernel_minor: r.kernel_minor,
            minor: r.minor,
            flags: r.flags,
            max_write: r.max_write,
            max_readahead: r.max_readahead,
            max_pages: r.max_pages,
            direct_io_allow_mmap: r.direct_io_allow_mmap,
        },
    );
});

fn check_agreed(kernel: &KernelInit, agreed: &Negotiated) {
    assert_eq!(kernel.major, wire::FUSE_KERNEL_VERSION);
    assert!(kernel.minor >= wire::MIN_KERNEL_MINOR_VERSION);
    assert_eq!(agreed.flags & !kernel.flags, 0, "agreed flags not offered");
    assert_eq!(
        agreed.flags & wire::FUSE_ATOMIC_O_TRUNC,
        0,
        "FUSE_ATOMIC_O_TRUNC agreed"
    );
    assert!(!agreed.has(wire::FUSE_ATOMIC_O_TRUNC));
    assert_eq!(agreed.kernel_minor, kernel.minor);
    assert!(agreed.minor <= kernel.minor && agreed.minor <= wire::FUSE_KERNEL_MINOR_VERSION);
    assert!((4096..=MAX_WRITE_LIMIT).contains(&agreed.max_write));
    assert!(agreed.max_readahead <= kernel.max_readahead);
    assert_eq!(
        agreed.direct_io_allow_mmap,
        agreed.has(wire::FUSE_DIRECT_IO_ALLOW_MMAP)
    );
    if agreed.max_pages != 0 {
        assert!(agreed.has(wire::FUSE_MAX_PAGES));
        assert!(u32::from(agreed.max_pages) * 4096 >= agreed.max_write);
    } else {
        assert!(agreed.max_write <= 32 * 4096);
    }
    if agreed.flags >> 32 == 0 {
        assert!(!agreed.has(wire::FUSE_INIT_EXT));
    }
}

/// The INIT reply is one well-formed message carrying the agreed values.
fn check_reply(unique: u64, agreed: &Negotiated) {
    let msg = reply::init(unique, agreed);
    let header = wire::OutHeader::decode(&msg).expect("reply has a header");
    assert_eq!(header.len as usize, msg.len());
    assert_eq!((header.error, header.unique), (0, unique));
    assert_eq!(msg.len(), wire::OutHeader::SIZE + wire::InitOut::SIZE);
    let out = wire::InitOut::decode(&msg[wire::OutHeader::SIZE..]).expect("fuse_init_out");
    assert_eq!(out.major, wire::FUSE_KERNEL_VERSION);
    assert_eq!(
        u64::from(out.flags) | u64::from(out.flags2) << 32,
        agreed.flags
    );
    assert_eq!(out.max_write, agreed.max_write);
    assert_eq!(out.max_readahead, agreed.max_readahead);
    assert_eq!(out.max_pages, agreed.max_pages);
}
