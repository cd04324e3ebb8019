//! A tiny typed encoder for the eBPF instructions this crate uses.

/// A register r0..r10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

/// Return value / helper result.
pub const R0: Reg = Reg(0);
/// First argument.
pub const R1: Reg = Reg(1);
/// Second argument.
pub const R2: Reg = Reg(2);
/// Third argument.
pub const R3: Reg = Reg(3);
/// Fourth argument.
pub const R4: Reg = Reg(4);
/// Read-only frame pointer.
pub const R10: Reg = Reg(10);

/// Operand width of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 32 bits.
    W,
    /// 64 bits.
    Dw,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::Dw => 0x18,
        }
    }
}

/// One 8-byte eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst (low nibble) and src (high nibble).
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const LD: u8 = 0x00;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const ATOMIC: u8 = 0xc0;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const MOV: u8 = 0xb0;
const JEQ: u8 = 0x10;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;

/// `src_reg` value marking an `ld_imm64` immediate as a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `imm` of an atomic add that returns the old value in `src`.
pub const ATOMIC_FETCH_ADD: i32 = 0x01;

fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst.0 | (src.0 << 4),
        off,
        imm,
    }
}

impl Insn {
    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        insn(ALU64 | MOV | K, dst, R0, 0, imm)
    }
    /// `dst = src`.
    pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        insn(ALU64 | MOV | X, dst, src, 0, 0)
    }
    /// `dst += imm`.
    pub fn add64_imm(dst: Reg, imm: i32) -> Insn {
        insn(ALU64 | ADD | K, dst, R0, 0, imm)
    }
    /// `*(size *)(dst + off) = imm`.
    pub fn st_mem(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        insn(ST | MEM | size.bits(), dst, R0, off, imm)
    }
    /// `*(size *)(dst + off) = src`.
    pub fn stx_mem(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        insn(STX | MEM | size.bits(), dst, src, off, 0)
    }
    /// `src = atomic_fetch_add((u64 *)(dst + off), src)`.
    pub fn atomic_fetch_add64(dst: Reg, src: Reg, off: i16) -> Insn {
        insn(
            STX | ATOMIC | Size::Dw.bits(),
            dst,
            src,
            off,
            ATOMIC_FETCH_ADD,
        )
    }
    /// `dst = map` for a map fd: two instruction slots.
    pub fn ld_map_fd(dst: Reg, fd: i32) -> [Insn; 2] {
        [
            insn(LD | IMM | Size::Dw.bits(), dst, Reg(PSEUDO_MAP_FD), 0, fd),
            Insn {
                code: 0,
                regs: 0,
                off: 0,
                imm: 0,
            },
        ]
    }
    /// `if dst == imm goto +off`.
    pub fn jeq_imm(dst: Reg, imm: i32, off: i16) -> Insn {
        insn(JMP | JEQ | K, dst, R0, off, imm)
    }
    /// Call helper number `helper`.
    pub fn call(helper: i32) -> Insn {
        insn(JMP | CALL, R0, R0, 0, helper)
    }
    /// Return r0.
    pub fn exit() -> Insn {
        insn(JMP | EXIT, R0, R0, 0, 0)
    }
    /// The little-endian wire form the kernel reads.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

/// Helper ids (include/uapi/linux/bpf.h).
pub mod helper {
    /// `bpf_map_lookup_elem`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `bpf_ktime_get_boot_ns` (5.8+).
    pub const KTIME_GET_BOOT_NS: i32 = 125;
    /// `bpf_ringbuf_output` (5.8+).
    pub const RINGBUF_OUTPUT: i32 = 130;
}

/// Byte offset of the key on the stack.
const KEY_OFF: i16 = -20;
/// Byte offset of the 16-byte record on the stack.
const REC_OFF: i16 = -16;

/// The probe: count in `counter[0]`, then emit `{count, boot_ns}` to `ringbuf`.
///
/// ```text
/// *(u32*)(r10-20) = 0
/// r2 = r10 ; r2 += -20
/// r1 = counter map
/// r0 = bpf_map_lookup_elem(r1, r2)
/// if r0 == 0 goto out
/// r1 = 1
/// r1 = atomic_fetch_add((u64*)(r0+0), r1)
/// r1 += 1
/// *(u64*)(r10-16) = r1
/// r0 = bpf_ktime_get_boot_ns()
/// *(u64*)(r10-8) = r0
/// r1 = ringbuf map ; r2 = r10 ; r2 += -16 ; r3 = 16 ; r4 = 0
/// bpf_ringbuf_output(r1, r2, r3, r4)
/// out: r0 = 0 ; exit
/// ```
pub fn probe_program(counter_fd: i32, ringbuf_fd: i32) -> Vec<Insn> {
    let mut p = Vec::new();
    p.push(Insn::st_mem(Size::W, R10, KEY_OFF, 0));
    p.push(Insn::mov64_reg(R2, R10));
    p.push(Insn::add64_imm(R2, KEY_OFF.into()));
    p.extend(Insn::ld_map_fd(R1, counter_fd));
    p.push(Insn::call(helper::MAP_LOOKUP_ELEM));
    let branch = p.len();
    p.push(Insn::jeq_imm(R0, 0, 0)); // patched below
    p.push(Insn::mov64_imm(R1, 1));
    p.push(Insn::atomic_fetch_add64(R0, R1, 0));
    p.push(Insn::add64_imm(R1, 1));
    p.push(Insn::stx_mem(Size::Dw, R10, R1, REC_OFF));
    p.push(Insn::call(helper::KTIME_GET_BOOT_NS));
    p.push(Insn::stx_mem(Size::Dw, R10, R0, REC_OFF + 8));
    p.extend(Insn::ld_map_fd(R1, ringbuf_fd));
    p.push(Insn::mov64_reg(R2, R10));
    p.push(Insn::add64_imm(R2, REC_OFF.into()));
    p.push(Insn::mov64_imm(R3, 16));
    p.push(Insn::mov64_imm(R4, 0));
    p.push(Insn::call(helper::RINGBUF_OUTPUT));
    let out = p.len();
    p[branch].off = i16::try_from(out - branch - 1).expect("short program");
    p.push(Insn::mov64_imm(R0, 0));
    p.push(Insn::exit());
    p
}

/// Concatenated wire bytes of a program.
pub fn to_bytes(prog: &[Insn]) -> Vec<u8> {
    prog.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden bytes, cross-checked against the uapi macros (BPF_MOV64_IMM etc.).
    #[test]
    fn golden_encodings() {
        assert_eq!(
            Insn::mov64_imm(R0, 0).to_bytes(),
            [0xb7, 0x00, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::mov64_imm(R3, 16).to_bytes(),
            [0xb7, 0x03, 0, 0, 16, 0, 0, 0]
        );
        assert_eq!(
            Insn::mov64_reg(R2, R10).to_bytes(),
            [0xbf, 0xa2, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::add64_imm(R2, -20).to_bytes(),
            [0x07, 0x02, 0, 0, 0xec, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            Insn::st_mem(Size::W, R10, -20, 0).to_bytes(),
            [0x62, 0x0a, 0xec, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::stx_mem(Size::Dw, R10, R1, -16).to_bytes(),
            [0x7b, 0x1a, 0xf0, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            Insn::atomic_fetch_add64(R0, R1, 0).to_bytes(),
            [0xdb, 0x10, 0, 0, 0x01, 0, 0, 0]
        );
        let [a, b] = Insn::ld_map_fd(R1, 7);
        assert_eq!(a.to_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(b.to_bytes(), [0; 8]);
        assert_eq!(
            Insn::jeq_imm(R0, 0, 13).to_bytes(),
            [0x15, 0x00, 13, 0, 0, 0, 0, 0]
        );
        assert_eq!(Insn::call(130).to_bytes(), [0x85, 0x00, 0, 0, 130, 0, 0, 0]);
        assert_eq!(Insn::exit().to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn branch_lands_on_the_exit_path() {
        let p = probe_program(3, 4);
        let j = p.iter().position(|i| i.code == 0x15).unwrap();
        let target = j + 1 + usize::try_from(p[j].off).unwrap();
        assert_eq!(p[target], Insn::mov64_imm(R0, 0));
        assert_eq!(*p.last().unwrap(), Insn::exit());
        assert_eq!(p.len(), 22);
        assert_eq!(to_bytes(&p).len(), 22 * 8);
    }
}
