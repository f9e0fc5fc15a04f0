//! Which vector instruction set the engine's own kernels run with.
//!
//! The fused kernels each have an AVX-512F path, an AVX2 + FMA path and a portable one. Each op
//! records the widest path it may take when the plan is built ([`Isa::capped`]), and its `run`
//! dispatches on that record. The record never names more than this CPU has, because
//! [`Isa::capped`] is its only source; that is what the kernels' `unsafe` calls rely on.
//!
//! Capping below the CPU (`--kernels avx2`) runs the AVX2 paths on an AVX-512 machine: the
//! deployment case of CPUs without AVX-512 (AMD Zen 2/3, hypervisors that hide it), measurable
//! and testable on any x86-64 machine. Every path sums in the same order, so f32 results are
//! the same bits whichever path ran (tests/parity.rs checks that end to end).

/// An instruction set tier, ordered from the least to the most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, built for the baseline target.
    Portable,
    /// AVX2 and FMA.
    Avx2Fma,
    /// AVX-512F (which implies AVX2 and FMA on every CPU that has it).
    Avx512,
}

impl Isa {
    /// The widest tier this CPU runs.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// The widest tier this CPU runs, but no wider than `cap`.
    pub fn capped(cap: Isa) -> Isa {
        cap.min(Isa::detected())
    }

    /// The tier in words (for logs and test notes).
    pub fn describe(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "AVX2 + FMA",
            Isa::Avx512 => "AVX-512",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_never_exceeds_the_cpu_nor_itself() {
        let cpu = Isa::detected();
        for cap in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512] {
            let got = Isa::capped(cap);
            assert!(got <= cpu && got <= cap, "{cap:?} on {cpu:?} gave {got:?}");
            assert!(got == cap || got == cpu);
        }
        assert_eq!(Isa::capped(Isa::Avx512), cpu);
        assert_eq!(Isa::capped(Isa::Portable), Isa::Portable);
        eprintln!("note: this CPU's widest kernel tier is {}", cpu.describe());
    }
}
