//! Just enough BTF parsing to find a `FUNC` type id by name (for fentry).

const KIND_FUNC: u32 = 12;

/// Looks up the type id of the `FUNC` named `name` in raw BTF (`/sys/kernel/btf/vmlinux`).
///
/// `Err` if the blob is malformed; `Ok(None)` if no such function.
pub fn find_func(btf: &[u8], name: &str) -> Result<Option<u32>, String> {
    let u16_at = |o: usize| btf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        btf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if u16_at(0) != Some(0xeb9f) {
        return Err("not little-endian BTF (bad magic)".into());
    }
    let bad = || "truncated BTF".to_string();
    let hdr = u32_at(4).ok_or_else(bad)? as usize;
    let type_off = hdr + u32_at(8).ok_or_else(bad)? as usize;
    let type_end = type_off + u32_at(12).ok_or_else(bad)? as usize;
    let str_off = hdr + u32_at(16).ok_or_else(bad)? as usize;
    let str_end = str_off + u32_at(20).ok_or_else(bad)? as usize;
    let strings = btf.get(str_off..str_end).ok_or_else(bad)?;
    let mut pos = type_off;
    let mut id = 1u32;
    while pos < type_end {
        let name_off = u32_at(pos).ok_or_else(bad)? as usize;
        let info = u32_at(pos + 4).ok_or_else(bad)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        if kind == KIND_FUNC {
            let s = strings.get(name_off..).ok_or_else(bad)?;
            let end = s.iter().position(|&b| b == 0).ok_or_else(bad)?;
            if &s[..end] == name.as_bytes() {
                return Ok(Some(id));
            }
        }
        pos += 12
            + match kind {
                1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
                3 => 12,              // ARRAY
                4 | 5 => 12 * vlen,   // STRUCT, UNION
                6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen, // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0,
                k => return Err(format!("unknown BTF kind {k}")),
            };
        id += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Vec<u8> {
        // Types: [1] INT "int", [2] FUNC_PROTO (1 param), [3] FUNC "f" -> 2.
        let strings = b"\0int\0f\0".to_vec();
        let mut types = Vec::new();
        for w in [1u32, 1 << 24, 4, 0x20] {
            types.extend(w.to_le_bytes());
        }
        for w in [0u32, (13 << 24) | 1, 1, 0, 1] {
            types.extend(w.to_le_bytes());
        }
        for w in [5u32, 12 << 24, 2] {
            types.extend(w.to_le_bytes());
        }
        let mut b = Vec::new();
        b.extend(0xeb9fu16.to_le_bytes());
        b.extend([1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn finds_func_by_name() {
        assert_eq!(find_func(&blob(), "f"), Ok(Some(3)));
        assert_eq!(find_func(&blob(), "int"), Ok(None));
        assert_eq!(find_func(&blob(), "g"), Ok(None));
        assert!(find_func(&[0u8; 4], "f").is_err());
    }

    #[test]
    fn vmlinux_btf_if_present() {
        let Ok(b) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let id = find_func(&b, "add_vmfork_randomness").unwrap();
        eprintln!("add_vmfork_randomness BTF id: {id:?}");
        assert_eq!(find_func(&b, "no_such_function_sysgenid").unwrap(), None);
    }
}
