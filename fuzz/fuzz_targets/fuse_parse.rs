//! Fuzzes `sysgenid_fuse::parse` and `RequestHeader::parse`: never panic, and what parses is consistent with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysgenid_fuse::wire::{self, Wire};
use sysgenid_fuse::{Operation, ParseError, RequestHeader, parse};

fuzz_target!(|data: &[u8]| {
    let header = RequestHeader::parse(data);
    match &header {
        Ok(h) => {
            assert!(data.len() >= RequestHeader::SIZE);
            assert_eq!(h.extensions_len() % 8, 0);
        }
        Err(e) => {
            assert_eq!(*e, ParseError::TruncatedHeader { got: data.len() });
            assert!(data.len() < RequestHeader::SIZE);
        }
    }

    let request = match parse(data) {
        Ok(request) => request,
        Err(e) => {
            // Error messages are built from the fields; they must format too.
            let _ = e.to_string();
            return;
        }
    };
    let h = request.header;
    assert_eq!(Ok(h), header);
    assert_eq!(h.len as usize, data.len());
    // The body is what lies between the header and the extensions.
    let after_header = &data[RequestHeader::SIZE..];
    let body_len = after_header
        .len()
        .checked_sub(h.extensions_len())
        .expect("extensions fit in the message");
    let body = &after_header[..body_len];

    match request.op {
        Operation::Init(init) => {
            assert_eq!(h.opcode, wire::FUSE_INIT);
            let raw = wire::InitIn::decode(body).expect("INIT body holds fuse_init_in");
            assert_eq!((init.major, init.minor), (raw.major, raw.minor));
            assert_eq!(init.max_readahead, raw.max_readahead);
            assert_eq!(init.flags as u32, raw.flags);
            if u64::from(raw.flags) & wire::FUSE_INIT_EXT == 0 {
                assert_eq!(init.flags >> 32, 0);
            }
        }
        Operation::Lookup { name } => {
            assert_eq!(h.opcode, wire::FUSE_LOOKUP);
            assert!(!name.contains(&0));
            assert_eq!(body.get(name.len()), Some(&0));
        }
        Operation::BatchForget { entries } => {
            assert_eq!(h.opcode, wire::FUSE_BATCH_FORGET);
            let raw = wire::BatchForgetIn::decode(body).expect("fuse_batch_forget_in");
            assert_eq!(entries.len(), raw.count as usize);
            assert_eq!(
                entries.len() * wire::ForgetOne::SIZE,
                body.len() - wire::BatchForgetIn::SIZE
            );
            assert_eq!(entries.iter().count(), entries.len());
            assert_eq!(entries.is_empty(), raw.count == 0);
        }
        Operation::Write { data: payload, .. } => {
            assert_eq!(h.opcode, wire::FUSE_WRITE);
            let raw = wire::WriteIn::decode(body).expect("fuse_write_in");
            assert_eq!(payload.len(), raw.size as usize);
            assert_eq!(payload, &body[wire::WriteIn::SIZE..]);
        }
        Operation::Ioctl {
            in_size, in_data, ..
        } => {
            assert_eq!(h.opcode, wire::FUSE_IOCTL);
            assert_eq!(in_data.len(), in_size as usize);
            assert_eq!(in_data, &body[wire::IoctlIn::SIZE..]);
        }
        Operation::Read { .. } => check_fixed::<wire::ReadIn>(h.opcode, wire::FUSE_READ, body),
        Operation::Poll { .. } => check_fixed::<wire::PollIn>(h.opcode, wire::FUSE_POLL, body),
        Operation::Interrupt { unique } => {
            check_fixed::<wire::InterruptIn>(h.opcode, wire::FUSE_INTERRUPT, body);
            assert_eq!(
                Some(unique),
                wire::InterruptIn::decode(body).map(|i| i.unique)
            );
        }
        Operation::Unknown { opcode } => {
            assert_eq!(opcode, h.opcode);
            assert!(!matches!(
                opcode,
                wire::FUSE_INIT
                    | wire::FUSE_LOOKUP
                    | wire::FUSE_READ
                    | wire::FUSE_WRITE
                    | wire::FUSE_IOCTL
                    | wire::FUSE_POLL
                    | wire::FUSE_INTERRUPT
            ));
        }
        _ => {}
    }
});

/// A fixed-size body was long enough for its struct and came from the right opcode.
fn check_fixed<T: Wire>(opcode: u32, want: u32, body: &[u8]) {
    assert_eq!(opcode, want);
    assert!(body.len() >= T::SIZE);
}
